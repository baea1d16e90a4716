"""Convert a CRIS training checkpoint (``DerrickWang005/CRIS.pytorch``) into
ris_plugins' ``RefSegmentor`` + ``CLIPResNet`` + ``RefCLIPTextEncoder`` +
``CRISFPN`` + ``CRISHead`` layout.

Input: the file CRIS's ``train.py`` writes, ``{'epoch', 'cur_iou',
'best_iou', 'prec', 'state_dict', 'optimizer', 'scheduler'}``, whose
``state_dict`` is the ``DistributedDataParallel`` model's (every key
``module.``-prefixed); a bare state dict under ``'state_dict'`` without the
prefix converts too. Read with ``torch.load(weights_only=True)``; only the
model weights are used.

Key mapping, CRIS (``model/segmenter.py`` ``CRIS``) -> ours:

* ``backbone.*`` is CLIP (``model/clip.py`` ``build_model``, OpenAI's
  names, plus ``visual.attnpool.connect.{0,1}``): converted by
  ``clip_to_ris.py``'s rules into ``backbone.*`` + ``text_encoder.*``
  (``logit_scale`` dropped);
* ``neck.*`` (``model/layers.py`` ``FPN``) -> ``fusion.*``
  (:data:`FPN_RULES`): ``txt_proj`` -> ``text_proj``, ``f1_v_proj`` ->
  ``v5_proj``, ``norm_layer`` -> ``gate_norm``, ``f2_v_proj`` / ``f2_cat``
  -> ``v4_proj`` / ``f4_fuse``, ``f3_v_proj`` / ``f3_cat`` -> ``v3_proj`` /
  ``f3_fuse``, ``f4_proj{5,4,3}`` -> ``q{5,4,3}_proj``, ``aggr`` ->
  ``aggregate``, ``coordconv.0.conv1`` -> ``coord_conv``, ``coordconv.1``
  -> ``out_conv``; every ``conv_layer`` ``.0`` (conv) / ``.1`` (BN) ->
  mmcv ``ConvModule`` ``.conv`` / ``.bn``;
* ``decoder.*`` (``TransformerDecoder``) -> ``decode_head.decoder.*``
  (:data:`DECODER_RULES`): same names except ``multihead_attn`` ->
  ``cross_attn``;
* ``proj.*`` (``Projector``) -> ``decode_head.projector.*``
  (:data:`PROJECTOR_RULES`): ``vis.1`` / ``vis.3`` ``conv_layer`` ->
  ``ConvModule``, ``vis.4`` and ``txt`` unchanged.

No tensor changes shape. The decoder and projector rules are shared with
ETRIS and BarLeRIa (``etris_to_ris.py``, ``barleria_to_ris.py``).

Usage::

    python tools/model_converters/cris_to_ris.py best_model.pth \\
        work_dirs/cris_r50_refcoco_converted.pth \\
        [--config configs/cris/cris_r50_8xb8-50e_refcoco-416x416.py]

With ``--config`` the result is loaded strictly into the model of that
config; any missing or unexpected key is reported, grouped by module, and
nothing is written.
"""
import argparse
import os.path as osp
import sys
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from torch import Tensor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import clip_to_ris  # noqa: E402
import converter_utils as cu  # noqa: E402
from converter_utils import Rule  # noqa: E402

#: Layout of CRIS's CLIP towers in our model (``CLIPResNet`` backbone +
#: ``RefCLIPTextEncoder``).
CRIS_LAYOUT = clip_to_ris.Layout('backbone.', 'text_encoder.')
#: Prefix of the CLIP model inside CRIS / ETRIS / BarLeRIa checkpoints.
UPSTREAM_CLIP = 'backbone.'


def conv_module(upstream: str, ours: str) -> List[Rule]:
    """Rules for an upstream ``conv_layer`` / ``linear_layer`` Sequential
    (``.0`` conv, ``.1`` BN, ``.2`` ReLU) that became an mmcv
    ``ConvModule`` (``.conv``, ``.bn``)."""
    return [Rule(f'{upstream}.0.', f'{ours}.conv.'),
            Rule(f'{upstream}.1.', f'{ours}.bn.')]


def scoped(upstream: str, ours: str, rules: Sequence[Rule]) -> List[Rule]:
    """``rules`` with both sides prefixed (module paths in the models)."""
    return [Rule(upstream + r.upstream, ours + r.ours, r.to_ours,
                 r.to_upstream) for r in rules]


FPN_RULES: List[Rule] = scoped('neck.', 'fusion.', [
    Rule('txt_proj.', 'text_proj.'),
    *conv_module('f1_v_proj', 'v5_proj'),
    Rule('norm_layer.', 'gate_norm.'),
    *conv_module('f2_v_proj', 'v4_proj'),
    *conv_module('f2_cat', 'f4_fuse'),
    *conv_module('f3_v_proj', 'v3_proj'),
    *conv_module('f3_cat', 'f3_fuse'),
    *conv_module('f4_proj5', 'q5_proj'),
    *conv_module('f4_proj4', 'q4_proj'),
    *conv_module('f4_proj3', 'q3_proj'),
    *conv_module('aggr', 'aggregate'),
    *conv_module('coordconv.0.conv1', 'coord_conv'),
    *conv_module('coordconv.1', 'out_conv'),
])
# CRIS TransformerDecoder == ETRIS GA == BarLeRIa Decoder.
DECODER_RULES: List[Rule] = scoped('decoder.', 'decode_head.decoder.', [
    Rule('layers.{i}.multihead_attn.', 'layers.{i}.cross_attn.'),
    Rule('layers.{i}.', 'layers.{i}.'),
    Rule('norm.', 'norm.'),
])
PROJECTOR_RULES: List[Rule] = scoped('proj.', 'decode_head.projector.', [
    *conv_module('vis.1', 'vis.1'),
    *conv_module('vis.3', 'vis.3'),
    Rule('vis.4.', 'vis.4.'),
    Rule('txt.', 'txt.'),
])
CRIS_RULES: List[Rule] = FPN_RULES + DECODER_RULES + PROJECTOR_RULES


def convert_clip_towers(clip: Dict[str, Tensor],
                        layout: clip_to_ris.Layout) -> Dict[str, Tensor]:
    """The CLIP model of a CRIS-family checkpoint (OpenAI names, the
    ``backbone.`` prefix removed) -> our towers at ``layout``'s prefixes
    (float32)."""
    return clip_to_ris.relayout(clip_to_ris.convert_clip(clip), layout)


def clip_towers_to_upstream(state: Dict[str, Tensor],
                            layout: clip_to_ris.Layout
                            ) -> Dict[str, Tensor]:
    """Inverse of :func:`convert_clip_towers`: our tower keys at
    ``layout``'s prefixes -> ``backbone.<OpenAI name>`` (with CRIS's
    ``attnpool.connect``)."""
    default = OrderedDict()
    for key, value in state.items():
        for target, ours in ((layout.visual, 'backbone.'),
                             (layout.text, 'text_encoder.')):
            if target is not None and key.startswith(target):
                default[ours + key[len(target):]] = value
                break
    return cu.add_prefix(
        clip_to_ris.to_openai(default, include_connect=True), UPSTREAM_CLIP)


def convert_state(state: Dict[str, Tensor], rules: Sequence[Rule],
                  layout: clip_to_ris.Layout,
                  source: str = 'checkpoint') -> Dict[str, Tensor]:
    """A CRIS-family model state dict (no ``module.`` prefix) -> ours:
    ``backbone.*`` through the CLIP rules, every other key through
    ``rules``.

    Raises:
        KeyError: No CLIP ``backbone.*`` keys, or a key without a rule
            (named, with ``source``).
    """
    clip, rest = cu.split_prefix(state, UPSTREAM_CLIP)
    if not clip:
        heads = sorted({k.split('.')[0] for k in rest})
        raise KeyError(f"{source}: no CLIP 'backbone.*' keys; the model "
                       f'keys start with {heads}')
    try:
        towers = convert_clip_towers(clip, layout)
    except (KeyError, ValueError) as err:
        raise type(err)(f'{source}: {err.args[0]}') from err
    return cu.merge_disjoint(towers, cu.rename(rules, rest, what=source))


def state_to_upstream(state: Dict[str, Tensor], rules: Sequence[Rule],
                      layout: clip_to_ris.Layout) -> Dict[str, Tensor]:
    """Inverse of :func:`convert_state` (tests write upstream-layout
    checkpoints with it)."""
    prefixes = tuple(p for p in layout if p is not None)
    towers = OrderedDict((k, v) for k, v in state.items()
                         if k.startswith(prefixes))
    rest = OrderedDict((k, v) for k, v in state.items()
                       if not k.startswith(prefixes))
    return cu.merge_disjoint(
        clip_towers_to_upstream(towers, layout),
        cu.rename(rules, rest, reverse=True, what='our model'))


def convert_cris(state: Dict[str, Tensor],
                 source: str = 'checkpoint') -> Dict[str, Tensor]:
    """A CRIS model state dict -> our ``RefSegmentor`` state dict."""
    return convert_state(state, CRIS_RULES, CRIS_LAYOUT, source)


def to_upstream_cris(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Our CRIS ``RefSegmentor`` state dict -> CRIS's model state dict
    (without ``module.``; the inverse of :func:`convert_cris`)."""
    return state_to_upstream(state, CRIS_RULES, CRIS_LAYOUT)


def convert_file(path: str) -> Dict[str, Tensor]:
    """Read CRIS's ``train.py`` checkpoint ``path`` and convert it."""
    state = cu.model_state(cu.load_upstream(path), path)
    return convert_cris(state, path)


def verify(converted: Dict[str, Tensor], config: str, source: str) -> None:
    """Load ``converted`` strictly into ``config``'s model.

    Raises:
        KeyError: Missing / unexpected keys, grouped by module.
        RuntimeError: A shape differs (from PyTorch).
    """
    from ris_plugins.utils.state_dict import load_state_dict_strict
    load_state_dict_strict(cu.build_model(config), converted, source)


def parse_args(description: str = __doc__,
               example: Optional[str] = None) -> argparse.Namespace:
    """Command-line arguments: ``src``, ``dst``, ``--config``."""
    parser = argparse.ArgumentParser(
        description=description.split('\n')[0],
        epilog='The file is read with torch.load(weights_only=True); only '
        'its model weights are converted.')
    parser.add_argument('src', help=example or 'CRIS train.py checkpoint, '
                        'e.g. best_model.pth')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument('--config', help='verify against this config '
                        '(strict load; nothing is written on a mismatch)')
    return parser.parse_args()


def main() -> None:
    """Convert, optionally verify, write ``{'state_dict', 'meta'}``."""
    args = parse_args()
    converted = convert_file(args.src)
    if args.config:
        verify(converted, args.config, args.src)
    cu.save_converted(converted, args.dst, args.src)


if __name__ == '__main__':
    main()

