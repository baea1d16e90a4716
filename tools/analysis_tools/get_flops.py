"""FLOPs and parameters of a RefSegmentor config: image + sentence.

Counts one plain-tensor forward ``model(img, tokens, text_mask)``
(``RefSegmentor.forward(mode='tensor')``) with mmengine's flop counter
(``mmengine.analysis``, fvcore's rules: one fused multiply-add counts as
one FLOP; element-wise ops such as softmax and GELU are not counted) on a
random image of ``--shape`` (default: the config's input size) and a real
sentence padded to the config's text length (its ``TokenizeText``
``context_length``), and prints the total and each top-level module
(backbone, text encoder, fusion, neck, decode head).

Example::

    python tools/analysis_tools/get_flops.py \\
        configs/demo/ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py \\
        --shape 160 160
"""
import argparse
import json
import logging
from typing import Dict, List, Optional

import torch


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='RefSegmentor config file or name')
    parser.add_argument('--shape', type=int, nargs=2, default=None,
                        metavar=('H', 'W'),
                        help='input size (default: the config\'s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default={}, help='config overrides')
    parser.add_argument('--out', default=None, help='also write JSON here')
    return parser.parse_args(argv)


def complexity(config: str, shape: Optional[List[int]] = None,
               options: Optional[dict] = None) -> Dict:
    """FLOPs / parameters in total and per top-level module.

    Returns:
        dict: ``flops``, ``params``, ``input_hw``, ``text_length`` and
        ``modules`` (name -> dict(flops, params)).

    Raises:
        ValueError: ``shape`` not positive.
    """
    from mmengine.analysis import FlopAnalyzer, parameter_count
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import ris_plugins  # noqa: F401
    from mmseg.registry import MODELS
    from ris_plugins.apis import find_config
    from ris_plugins.utils.synthetic import input_size, tokenize
    init_default_scope('mmseg')
    cfg = Config.fromfile(find_config(config))
    cfg.merge_from_dict(options or {})
    h, w = shape or input_size(cfg)
    if h <= 0 or w <= 0:
        raise ValueError(f'--shape must be positive, got {h} {w}')
    text = tokenize(cfg)
    model = MODELS.build(cfg.model).eval()
    inputs = (torch.randn(1, 3, h, w), text['text_tokens'][None],
              text['text_mask'][None])
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    with torch.no_grad():
        by_module = analyzer.by_module()
    params = parameter_count(model)
    names = [n for n, _ in model.named_children()
             if n != 'data_preprocessor']
    return dict(
        flops=by_module[''], params=params[''], input_hw=[h, w],
        text_length=int(text['text_tokens'].shape[0]),
        modules={n: dict(flops=by_module.get(n, 0), params=params.get(n, 0))
                 for n in names})


def main(argv: Optional[List[str]] = None) -> Dict:
    args = parse_args(argv)
    logging.getLogger('mmengine').setLevel(logging.ERROR)
    res = complexity(args.config, args.shape, args.cfg_options)
    h, w = res['input_hw']
    print(f'{args.config}\ninput: image 1x3x{h}x{w} + '
          f'{res["text_length"]} tokens\n'
          f'FLOPs: {res["flops"] / 1e9:.3f} G   Params: '
          f'{res["params"] / 1e6:.3f} M')
    for name, m in res['modules'].items():
        print(f'  {name:<14} {m["flops"] / 1e9:8.3f} GFLOPs '
              f'{m["params"] / 1e6:8.3f} M params')
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == '__main__':
    main()
