"""Convert a BarLeRIa training checkpoint (``NastrondAd/BarLeRIa``,
CLIP ViT-B/16) into ris_plugins' ``RefSegmentor`` + ``DualEncoderBackbone``
(``CLIPViT`` + ``RefCLIPTextEncoder`` + ``SNF`` + ``LIMPrompts`` +
``GSTSideNet``) + ``HANeck`` + ``CRISHead`` layout.

Input: the file BarLeRIa's ``train.py`` writes (as ETRIS's: ``'state_dict'``
with ``module.``-prefixed keys, plus optimizer / scheduler state); read
with ``torch.load(weights_only=True)``, only the model weights are used.

Key mapping, BarLeRIa (``model/segmenter.py`` ``BARLERIA``) -> ours:

* ``backbone.*`` is CLIP (``model/clip.py``) with SNF's flows added to every
  block (``snf.py`` ``set_snf``): the CLIP weights go to
  ``backbone.visual.*`` / ``backbone.text.*`` by ``clip_to_ris.py``'s rules;
  the flows (``flow.py`` ``NormalizingFlow``) of visual block i
  (``backbone.visual.transformer.resblocks.{i}.flow`` / ``flow2``) and text
  block i (``backbone.transformer.resblocks.{i}.flow`` / ``flow2``) go to
  ``backbone.shortcut_module.{visual,text}.{i}.{0,1}``
  (:data:`SNF_RULES`): ``affine_transform.mu`` / ``logsigma`` -> ``mu`` /
  ``log_sigma``; planar step k ``transforms.{k}.scale`` / ``weight``
  (1, d) -> ``steps.{k}.u`` / ``w`` (d,), ``transforms.{k}.bias`` (1,) ->
  ``steps.{k}.b``. ``log_jacobians.{k}.*`` are aliases of the same
  parameters (``PlanarFlowLogDetJacobian`` re-registers them) and are
  dropped after checking that they equal ``transforms.{k}.*``;
* ``intertwiner.*`` (``model/intertwiner.py`` ``Intertwiner_ViT``) ->
  ``backbone.interactions.0.*`` (:data:`LIM_RULES`): ``proj`` (text ->
  vision prompts) -> ``t2v``; ``proj_txt`` (vision -> text, only with
  ``use_txt_add``) -> ``v2t``;
* ``side_adapter_network.*`` (``model/side_adapter/side_adapter.py``
  ``RegionwiseSideAdapterNetwork`` on ``model/absvit.py``) and
  ``side_linear`` -> ``backbone.side_net.*`` (:data:`GST_RULES`):
  ``vit_model.patch_embed.proj`` -> ``patch_embed.projection``,
  ``vit_model.pos_embed`` -> ``pos_embed``, ``vit_model.blocks.{i}``
  ``norm1`` / ``attn.qkv`` / ``attn.proj`` / ``norm2`` keep their names and
  ``mlp.fc1`` / ``mlp.fc2`` -> ``ffn.layers.0.0`` / ``ffn.layers.1``,
  ``vit_model.decoders.{i}`` -> ``decoders.{i}``, ``query_embed`` /
  ``query_pos_embed`` unchanged, ``fusion_layers.layer_{i}.input_proj.0`` /
  ``.1`` (LayerNorm2d, 1x1 conv) -> ``fusions.{i}.norm`` / ``.proj``,
  ``proj`` (text prompt MLP) -> ``prompt_proj``, ``side_linear`` ->
  ``out_proj``;
* ``neck.*`` (``Neck`` = ETRIS ``HA``), ``decoder.*`` (``Decoder`` = GA)
  and ``proj.*`` (``Projector``): ETRIS's / CRIS's rules.

The released model (``use_txt_add: False``, padding prompts attended to,
batch-axis prior) converts into
``projects/barleria/configs/``
``barleria-as-released_vit-b16_8xb4-50e_refcoco-416x416.py``;
our default BarLeRIa config adds the vision -> text LIM (``v2t``), which
the release does not have.

Usage::

    python tools/model_converters/barleria_to_ris.py best_model.pth \\
        work_dirs/barleria_refcoco_converted.pth \\
        [--config <the as-released config above>]

With ``--config`` the result is loaded strictly into that config's model;
nothing is written on a mismatch.
"""
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Dict, List

import torch
from torch import Tensor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import converter_utils as cu  # noqa: E402
import cris_to_ris as cris  # noqa: E402
import etris_to_ris as etris  # noqa: E402
from converter_utils import Rule  # noqa: E402

SNF = 'backbone.shortcut_module.'
TOWER_BLOCKS = {
    'visual': 'backbone.visual.transformer.resblocks.{i}.',
    'text': 'backbone.transformer.resblocks.{i}.',
}
FLOW_KEY = re.compile(r'\.flow2?\.')
ALIAS = re.compile(r'\.(flow2?)\.log_jacobians\.(\d+)\.')


def _flow_rules(upstream: str, ours: str) -> List[Rule]:
    """One ``NormalizingFlow`` -> one :class:`ShortcutFlow`."""
    sq, unsq = cu.squeeze_leading, cu.unsqueeze_leading
    return [
        Rule(upstream + 'affine_transform.mu', ours + 'mu'),
        Rule(upstream + 'affine_transform.logsigma', ours + 'log_sigma'),
        Rule(upstream + 'transforms.{k}.scale', ours + 'steps.{k}.u', sq,
             unsq),
        Rule(upstream + 'transforms.{k}.weight', ours + 'steps.{k}.w', sq,
             unsq),
        Rule(upstream + 'transforms.{k}.bias', ours + 'steps.{k}.b'),
    ]


SNF_RULES: List[Rule] = [
    rule for tower, block in TOWER_BLOCKS.items()
    for n, flow in enumerate(('flow.', 'flow2.'))
    for rule in _flow_rules(block + flow, f'{SNF}{tower}.{{i}}.{n}.')
]
LIM_RULES: List[Rule] = cris.scoped('intertwiner.', etris.BRIDGER, [
    Rule('proj_txt.', 'v2t.'),
    Rule('proj.', 't2v.'),
])
GST_RULES: List[Rule] = cris.scoped(
    'side_adapter_network.', 'backbone.side_net.', [
        Rule('vit_model.patch_embed.proj.', 'patch_embed.projection.'),
        Rule('vit_model.pos_embed', 'pos_embed'),
        Rule('vit_model.blocks.{i}.mlp.fc1.', 'blocks.{i}.ffn.layers.0.0.'),
        Rule('vit_model.blocks.{i}.mlp.fc2.', 'blocks.{i}.ffn.layers.1.'),
        Rule('vit_model.blocks.{i}.', 'blocks.{i}.'),
        Rule('vit_model.decoders.{i}.', 'decoders.{i}.'),
        Rule('query_embed', 'query_embed'),
        Rule('query_pos_embed', 'query_pos_embed'),
        Rule('fusion_layers.layer_{i}.input_proj.0.', 'fusions.{i}.norm.'),
        Rule('fusion_layers.layer_{i}.input_proj.1.', 'fusions.{i}.proj.'),
        Rule('proj.', 'prompt_proj.'),
    ]) + [Rule('side_linear.', 'backbone.side_net.out_proj.')]
BARLERIA_RULES: List[Rule] = LIM_RULES + GST_RULES + etris.HEAD_RULES


def drop_flow_aliases(state: Dict[str, Tensor],
                      source: str) -> Dict[str, Tensor]:
    """Remove ``flow*.log_jacobians.{k}.*``, after checking each equals the
    ``flow*.transforms.{k}.*`` parameter it aliases.

    Raises:
        KeyError: An alias without its ``transforms`` parameter.
        ValueError: An alias that differs from it (a checkpoint not written
            by BarLeRIa's model; named).
    """
    out = OrderedDict()
    for key, value in state.items():
        if not ALIAS.search(key):
            out[key] = value
            continue
        target = ALIAS.sub(lambda m: f'.{m.group(1)}.transforms.'
                           f'{m.group(2)}.', key)
        if target not in state:
            raise KeyError(f'{source}: {key!r} has no parameter {target!r} '
                           'to alias')
        if not torch.equal(state[target], value):
            raise ValueError(f'{source}: {key!r} differs from {target!r}; '
                             'BarLeRIa stores the same parameter under both')
    return out


def convert_barleria(state: Dict[str, Tensor],
                     source: str = 'checkpoint') -> Dict[str, Tensor]:
    """A BarLeRIa model state dict (no ``module.``) -> ours.

    Raises:
        KeyError: Not a ViT CLIP, or a key without a rule (named).
        ValueError: A flow alias that differs from its parameter, or a flow
            tensor not of shape (1, d) where one is expected.
    """
    if not etris.is_vit_state(state, source):
        raise KeyError(f'{source}: BarLeRIa is released for CLIP ViT only; '
                       'this checkpoint holds a ResNet CLIP')
    state = drop_flow_aliases(state, source)
    flows = OrderedDict((k, v) for k, v in state.items()
                        if FLOW_KEY.search(k))
    rest = OrderedDict((k, v) for k, v in state.items()
                       if not FLOW_KEY.search(k))
    main = cris.convert_state(rest, BARLERIA_RULES, etris.DUAL_LAYOUT,
                              source)
    return cu.merge_disjoint(main, cu.rename(SNF_RULES, flows, what=source))


def to_upstream_barleria(state: Dict[str, Tensor],
                         with_aliases: bool = True) -> Dict[str, Tensor]:
    """Our BarLeRIa state dict -> BarLeRIa's model state dict (the inverse
    of :func:`convert_barleria`), with the ``log_jacobians`` aliases as
    ``state_dict()`` writes them unless ``with_aliases`` is False."""
    flows = OrderedDict((k, v) for k, v in state.items()
                        if k.startswith(SNF))
    rest = OrderedDict((k, v) for k, v in state.items()
                       if not k.startswith(SNF))
    out = cu.merge_disjoint(
        cris.state_to_upstream(rest, BARLERIA_RULES, etris.DUAL_LAYOUT),
        cu.rename(SNF_RULES, flows, reverse=True, what='our model'))
    if with_aliases:
        aliases = OrderedDict(
            (k.replace('.transforms.', '.log_jacobians.'), v)
            for k, v in out.items()
            if FLOW_KEY.search(k) and '.transforms.' in k)
        out = cu.merge_disjoint(out, aliases)
    return out


def convert_file(path: str) -> Dict[str, Tensor]:
    """Read BarLeRIa's ``train.py`` checkpoint ``path`` and convert it."""
    return convert_barleria(cu.model_state(cu.load_upstream(path), path),
                            path)


def main() -> None:
    """Convert, optionally verify, write ``{'state_dict', 'meta'}``."""
    args = cris.parse_args(__doc__, 'BarLeRIa train.py checkpoint, e.g. '
                           'best_model.pth')
    converted = convert_file(args.src)
    if args.config:
        cris.verify(converted, args.config, args.src)
    cu.save_converted(converted, args.dst, args.src)


if __name__ == '__main__':
    main()
