"""Inference speed of a RefSegmentor config at batch 1.

Default mode: the plain-tensor forward ``model(img, tokens, text_mask)``
(``RefSegmentor.forward(mode='tensor')``) on synthetic inputs of the
config's input size with a real sentence tokenized by its own pipeline
(``ris_plugins.utils.synthetic.synthetic_inputs``): median ms/image and
images/s after warm-up, with the torch thread count.

``--sentences K``: the time of ``RefSegInferencer`` answering K sentences
on one image in one call (the image loaded once and, for backbones that do
not read the text, encoded once) against K separate one-sentence calls,
alternating the two in one process, and their ratio (issue 13, section 2).

Without CHECKPOINT the model has random weights (speed does not depend on
them); the output says so.

Examples::

    python tools/analysis_tools/benchmark.py \\
        configs/demo/ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py
    python tools/analysis_tools/benchmark.py CONFIG work_dirs/demo/iter_2000.pth
    python tools/analysis_tools/benchmark.py CONFIG --sentences 8
"""
import argparse
import json
import os.path as osp
import statistics
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

SENTENCES = ('the small red circle', 'the blue square on the left',
             'the star left of the green square', 'the large cross',
             'the yellow triangle at the top', 'the purple diamond',
             'the smallest shape on the right', 'the green star below the '
             'red square')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='RefSegmentor config file or name')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint (default: random weights)')
    parser.add_argument('--warmup', type=int, default=5,
                        help='untimed runs first (default 5)')
    parser.add_argument('--repeat', type=int, default=30,
                        help='timed runs (default 30)')
    parser.add_argument('--sentences', type=int, default=0,
                        help='K: time K sentences on one image in one '
                        'RefSegInferencer call vs K separate calls')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch\'s)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default={}, help='config overrides')
    parser.add_argument('--out', default=None, help='also write JSON here')
    return parser.parse_args(argv)


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def median_seconds(fn: Callable[[], object], warmup: int, repeat: int,
                   device: str = 'cpu') -> List[float]:
    """Seconds of each of ``repeat`` timed calls of ``fn`` after
    ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def load_cfg(config: str, options: dict):
    from mmengine.config import Config

    import ris_plugins  # noqa: F401
    from ris_plugins.apis import find_config
    cfg = Config.fromfile(find_config(config))
    cfg.merge_from_dict(options)
    return cfg


def forward_speed(args) -> Dict[str, float]:
    """ms/image and images/s of ``model(img, tokens, text_mask)``."""
    from mmengine.registry import init_default_scope

    from mmseg.registry import MODELS
    from ris_plugins.apis import load_weights
    from ris_plugins.utils.synthetic import synthetic_inputs
    init_default_scope('mmseg')
    cfg = load_cfg(args.config, args.cfg_options)
    model = MODELS.build(cfg.model)
    if args.checkpoint:
        load_weights(model, args.checkpoint)
    model = model.to(args.device).eval()
    img, tokens, mask = (t.to(args.device)
                         for t in synthetic_inputs(cfg, 1)[0])
    with torch.no_grad():
        times = median_seconds(lambda: model(img, tokens, mask),
                               args.warmup, args.repeat, args.device)
    med = statistics.median(times)
    return dict(ms_per_image=1e3 * med, images_per_s=1 / med,
                min_ms=1e3 * min(times), max_ms=1e3 * max(times),
                input_hw=list(img.shape[2:]), text_length=tokens.shape[1],
                params_m=sum(p.numel() for p in model.parameters()) / 1e6)


def sentences_speed(args) -> Dict[str, float]:
    """Seconds for K sentences on one image: one call vs K calls,
    alternating, median over ``repeat`` rounds."""
    from ris_plugins.apis import RefSegInferencer
    cfg = load_cfg(args.config, args.cfg_options)
    inferencer = RefSegInferencer(cfg, weights=args.checkpoint,
                                  device=args.device)
    k = args.sentences
    texts = [SENTENCES[i % len(SENTENCES)] for i in range(k)]
    rng = np.random.RandomState(0)
    image = (rng.rand(240, 320, 3) * 255).astype(np.uint8)  # RefShapes-like

    def joint():
        return inferencer(image, texts, batch_size=k)

    def separate():
        return [inferencer(image, t) for t in texts]

    with torch.no_grad():
        for _ in range(max(1, args.warmup // 2)):
            joint(), separate()
        a, b = [], []
        for _ in range(args.repeat):
            a += median_seconds(joint, 0, 1, args.device)
            b += median_seconds(separate, 0, 1, args.device)
    one, many = statistics.median(a), statistics.median(b)
    independent = inferencer.model.text_input is None
    return dict(sentences=k, one_call_s=one, separate_calls_s=many,
                speedup=many / one, image_encoded_once=independent,
                image_hw=[240, 320])


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = osp.basename(args.config)
    weights = args.checkpoint or 'random weights (speed only)'
    if args.sentences:
        res = sentences_speed(args)
        print(f'{name}: {res["sentences"]} sentences on one '
              f'{res["image_hw"][0]}x{res["image_hw"][1]} image, '
              f'{weights}, {torch.get_num_threads()} threads, '
              f'{args.device}: one call {res["one_call_s"] * 1e3:.1f} ms, '
              f'{res["sentences"]} separate calls '
              f'{res["separate_calls_s"] * 1e3:.1f} ms, speed-up '
              f'{res["speedup"]:.2f}x (image encoded once: '
              f'{res["image_encoded_once"]}; median of {args.repeat})')
    else:
        res = forward_speed(args)
        print(f'{name}: batch 1, {res["input_hw"][0]}x{res["input_hw"][1]} '
              f'image + {res["text_length"]} tokens, {weights}, '
              f'{torch.get_num_threads()} threads, {args.device}: '
              f'{res["ms_per_image"]:.2f} ms/image, '
              f'{res["images_per_s"]:.2f} images/s (median of '
              f'{args.repeat} after {args.warmup} warm-up; min '
              f'{res["min_ms"]:.2f}, max {res["max_ms"]:.2f} ms)')
    res.update(config=name, threads=torch.get_num_threads(),
               device=args.device, weights=weights)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == '__main__':
    main()
