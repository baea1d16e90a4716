"""Convert an ETRIS training checkpoint (``kkakkkka/ETRIS``, ViT-B/16 or
RN50 / RN101) into ris_plugins' ``RefSegmentor`` + ``DualEncoderBackbone``
(``CLIPViT`` / ``CLIPResNet`` + ``RefCLIPTextEncoder`` + ``BridgerViT`` /
``BridgerRN``) + ``HANeck`` + ``CRISHead`` layout.

Input: the file ETRIS's ``train.py`` writes, ``{'epoch', 'cur_iou',
'best_iou', 'prec', 'state_dict', 'optimizer', 'scheduler'}`` with
``module.``-prefixed model keys (DDP); read with
``torch.load(weights_only=True)``, only the model weights are used. The
architecture (ViT or ResNet) is read from the CLIP keys.

Key mapping, ETRIS (``model/segmenter.py`` ``ETRIS``) -> ours:

* ``backbone.*`` is CLIP (``model/clip.py``; the ViT's positional table is
  already resized to the training size, 677 rows at 416) ->
  ``backbone.visual.*`` / ``backbone.text.*`` by ``clip_to_ris.py``'s rules
  (``logit_scale`` dropped);
* ``bridger.*`` -> ``backbone.interactions.0.*``:

  - ViT (``model/bridger.py`` ``Bridger_ViT``, :data:`BRIDGER_VIT_RULES`):
    ``zoom_in.{i}`` / ``zoom_out.{i}`` -> ``stages.{i}.zoom_in`` /
    ``zoom_out`` (same Sequential indices), ``linear1.{i}`` / ``linear2.{i}``
    -> ``stages.{i}.text_in`` / ``text_out``, ``fusion_v.{i}`` /
    ``fusion_t.{i}`` (``InteractorT``) ``.multihead_attn`` ->
    ``stages.{i}.fuse_v`` / ``fuse_t`` ``.attn``, and the ladder norms
    ``ln_v.{j}`` / ``ln_t.{j}`` -> ``stages.{j+1}.ladder_v`` / ``ladder_t``
    (ETRIS stores stage s's norm at index s - 1; each of our stages owns
    its norms);
  - ResNet (``Bridger_RN``, :data:`BRIDGER_RN_RULES`, all three stages
    fused as in every released config): ``zoom_in.{i}`` / ``zoom_out.{i}``
    -> ``stages.{i}.zoom_in`` / ``zoom_out``, ``linear1.{i}`` /
    ``linear2.{i}`` -> ``stages.{i}.txt_in`` / ``txt_out``, ``ln_v.{j}`` /
    ``ln_t.{j}`` -> ``ladder_v.{j}`` / ``ladder_t.{j}``, and each
    ``Interactor`` (``model/layers.py``) onto mmcv's
    ``BaseTransformerLayer``: ``self_attn`` -> ``attentions.0.attn``,
    ``multihead_attn`` -> ``attentions.1.attn``, ``linear1`` /
    ``linear2`` -> ``ffns.0.layers.0.0`` / ``ffns.0.layers.1``,
    ``norm1`` / ``norm2`` / ``norm3`` -> ``norms.0`` / ``norms.1`` /
    ``norms.2``;

* ``neck.*`` (``HA``) -> ``fusion.*`` (:data:`HA_RULES`): ``fusion{3,4,5}``
  (``InteractorT``) ``.multihead_attn`` -> ``gates.{0,1,2}``, ``txt_proj``
  -> ``text_proj``, ``f3_proj`` / ``f4_proj`` (``conv_layer``) -> ``proj3``
  / ``proj4`` (``ConvModule``), ``f5_proj`` (``deconv_layer``) -> ``proj5``
  (same Sequential), ``aggr`` -> ``aggregate``, ``coordconv.0.conv1`` ->
  ``coord_conv``, ``coordconv.1`` -> ``out_conv``;
* ``decoder.*`` (``GA``) and ``proj.*`` (``Projector``): CRIS's rules
  (``cris_to_ris.py``).

No tensor changes shape. ETRIS RN converts into the as-released config
(``configs/etris/etris-as-released_r50_8xb4-50e_refcoco-416x416.py``,
``mask_padding=False``); our default RN configs mask padding words, which
changes the outputs (not the keys).

Usage::

    python tools/model_converters/etris_to_ris.py best_model.pth \\
        work_dirs/etris_vit-b16_refcoco_converted.pth \\
        [--config configs/etris/etris_vit-b16_8xb4-50e_refcoco-416x416.py]

With ``--config`` the result is loaded strictly into that config's model;
nothing is written on a mismatch.
"""
import os.path as osp
import sys
from typing import Dict, List

from torch import Tensor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import clip_to_ris  # noqa: E402
import converter_utils as cu  # noqa: E402
import cris_to_ris as cris  # noqa: E402
from converter_utils import Rule  # noqa: E402

#: Our layout of the CLIP towers inside ``DualEncoderBackbone``.
DUAL_LAYOUT = clip_to_ris.Layout('backbone.visual.', 'backbone.text.')
BRIDGER = 'backbone.interactions.0.'

BRIDGER_VIT_RULES: List[Rule] = cris.scoped('bridger.', BRIDGER, [
    Rule('zoom_in.{i}.', 'stages.{i}.zoom_in.'),
    Rule('zoom_out.{i}.', 'stages.{i}.zoom_out.'),
    Rule('linear1.{i}.', 'stages.{i}.text_in.'),
    Rule('linear2.{i}.', 'stages.{i}.text_out.'),
    Rule('fusion_v.{i}.multihead_attn.', 'stages.{i}.fuse_v.attn.'),
    Rule('fusion_t.{i}.multihead_attn.', 'stages.{i}.fuse_t.attn.'),
    Rule('ln_v.{j}.', 'stages.{j+1}.ladder_v.'),
    Rule('ln_t.{j}.', 'stages.{j+1}.ladder_t.'),
])


def interactor_rules(upstream: str, ours: str) -> List[Rule]:
    """ETRIS ``Interactor`` (post-norm self-attn, cross-attn, FFN) -> mmcv
    ``BaseTransformerLayer`` names."""
    return cris.scoped(upstream, ours, [
        Rule('self_attn.', 'attentions.0.attn.'),
        Rule('multihead_attn.', 'attentions.1.attn.'),
        Rule('linear1.', 'ffns.0.layers.0.0.'),
        Rule('linear2.', 'ffns.0.layers.1.'),
        Rule('norm1.', 'norms.0.'),
        Rule('norm2.', 'norms.1.'),
        Rule('norm3.', 'norms.2.'),
    ])


BRIDGER_RN_RULES: List[Rule] = cris.scoped('bridger.', BRIDGER, [
    Rule('zoom_in.{i}.', 'stages.{i}.zoom_in.'),
    Rule('zoom_out.{i}.', 'stages.{i}.zoom_out.'),
    Rule('linear1.{i}.', 'stages.{i}.txt_in.'),
    Rule('linear2.{i}.', 'stages.{i}.txt_out.'),
    *interactor_rules('fusion_v.{i}.', 'stages.{i}.fusion_v.'),
    *interactor_rules('fusion_t.{i}.', 'stages.{i}.fusion_t.'),
    Rule('ln_v.{j}.', 'ladder_v.{j}.'),
    Rule('ln_t.{j}.', 'ladder_t.{j}.'),
])
# ETRIS HA == BarLeRIa Neck.
HA_RULES: List[Rule] = cris.scoped('neck.', 'fusion.', [
    Rule('fusion3.multihead_attn.', 'gates.0.'),
    Rule('fusion4.multihead_attn.', 'gates.1.'),
    Rule('fusion5.multihead_attn.', 'gates.2.'),
    Rule('txt_proj.', 'text_proj.'),
    *cris.conv_module('f3_proj', 'proj3'),
    *cris.conv_module('f4_proj', 'proj4'),
    Rule('f5_proj.', 'proj5.'),
    *cris.conv_module('aggr', 'aggregate'),
    *cris.conv_module('coordconv.0.conv1', 'coord_conv'),
    *cris.conv_module('coordconv.1', 'out_conv'),
])
HEAD_RULES: List[Rule] = HA_RULES + cris.DECODER_RULES + cris.PROJECTOR_RULES
ETRIS_VIT_RULES: List[Rule] = BRIDGER_VIT_RULES + HEAD_RULES
ETRIS_RN_RULES: List[Rule] = BRIDGER_RN_RULES + HEAD_RULES


def is_vit_state(state: Dict[str, Tensor], source: str) -> bool:
    """Whether an upstream model state dict holds a ViT CLIP (it has
    ``backbone.visual.proj``) or a ResNet one
    (``backbone.visual.attnpool.*``).

    Raises:
        KeyError: Neither (names ``source``).
    """
    if 'backbone.visual.proj' in state:
        return True
    if 'backbone.visual.attnpool.positional_embedding' in state:
        return False
    raise KeyError(f'{source}: not an ETRIS / BarLeRIa model: no CLIP ViT '
                   "'backbone.visual.proj' and no ResNet "
                   "'backbone.visual.attnpool.positional_embedding'")


def convert_etris(state: Dict[str, Tensor],
                  source: str = 'checkpoint') -> Dict[str, Tensor]:
    """An ETRIS model state dict (no ``module.``) -> ours."""
    rules = ETRIS_VIT_RULES if is_vit_state(state, source) else \
        ETRIS_RN_RULES
    return cris.convert_state(state, rules, DUAL_LAYOUT, source)


def to_upstream_etris(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Our ETRIS state dict -> ETRIS's model state dict (the inverse of
    :func:`convert_etris`; a ``backbone.visual.cls_token`` means ViT)."""
    vit = 'backbone.visual.cls_token' in state
    return cris.state_to_upstream(
        state, ETRIS_VIT_RULES if vit else ETRIS_RN_RULES, DUAL_LAYOUT)


def convert_file(path: str) -> Dict[str, Tensor]:
    """Read ETRIS's ``train.py`` checkpoint ``path`` and convert it."""
    return convert_etris(cu.model_state(cu.load_upstream(path), path), path)


def main() -> None:
    """Convert, optionally verify, write ``{'state_dict', 'meta'}``."""
    args = cris.parse_args(__doc__, 'ETRIS train.py checkpoint, e.g. '
                           'best_model.pth')
    converted = convert_file(args.src)
    if args.config:
        cris.verify(converted, args.config, args.src)
    cu.save_converted(converted, args.dst, args.src)


if __name__ == '__main__':
    main()
