"""Convert an OpenAI CLIP checkpoint (RN50 / RN101 / ViT-B/16) into the
``backbone.*`` (:class:`CLIPResNet` or :class:`CLIPViT`) and
``text_encoder.*`` (:class:`RefCLIPTextEncoder`) keys of ris_plugins'
``RefSegmentor``, as CRIS / ETRIS initialise their encoders
(``model/clip.py`` ``build_model``).

Input: the OpenAI TorchScript archive (``RN50.pt``) or a plain state dict
saved with ``torch.save`` (optionally under ``'state_dict'``).
Half-precision tensors are cast to float32. The archive is **not** opened
with ``torch.jit.load``, which compiles the TorchScript code in the file and
runs its ``__setstate__`` methods: its tensors are read from ``data.pkl``
with a restricted unpickler (``converter_utils.read_torchscript_state_dict``;
only module records, tensors and storages, any other global refused), and
plain files with ``torch.load(weights_only=True)``. No code from the file
runs either way.

Key mapping, OpenAI (``clip/model.py``) -> ours (:data:`KEY_TABLE`, used
in both directions; ``{i}`` is a layer index, ``T`` stands for
``text_encoder.clip.text_model`` and ``Li`` for ``T.encoder.layers.{i}``):

* ``visual.*`` -> ``backbone.*``: the same module names (``conv1``,
  ``bn1``, ..., ``layer1.0.conv1``, ``layer1.0.downsample.0``,
  ``attnpool.positional_embedding``, ``attnpool.q_proj`` / ``k_proj`` /
  ``v_proj`` / ``c_proj``);
* ``token_embedding.*`` -> ``T.embeddings.token_embedding.*``;
* ``positional_embedding`` (77, D) ->
  ``T.embeddings.position_embedding.weight``;
* ``transformer.resblocks.{i}.ln_1.*`` -> ``Li.layer_norm1.*``;
* ``transformer.resblocks.{i}.attn.out_proj.*`` ->
  ``Li.self_attn.out_proj.*``;
* ``transformer.resblocks.{i}.mlp.c_fc.*`` -> ``Li.mlp.fc1.*``;
* ``transformer.resblocks.{i}.mlp.c_proj.*`` -> ``Li.mlp.fc2.*``;
* ``transformer.resblocks.{i}.ln_2.*`` -> ``Li.layer_norm2.*``;
* ``ln_final.*`` -> ``T.final_layer_norm.*``.

Two entries change the tensor as well (:data:`SPLIT_TABLE`,
:data:`TRANSPOSE_TABLE`):

* ``transformer.resblocks.{i}.attn.in_proj_weight`` (3D, D) / ``in_proj_bias``
  (3D,) are split in three along dim 0 into ``self_attn.{q,k,v}_proj.weight``
  / ``.bias`` (``nn.MultiheadAttention`` packs q, k, v in that order);
* ``text_projection`` (D, C'), used as ``x @ text_projection``, becomes
  ``text_encoder.clip.text_projection.weight`` = its transpose (C', D).

A ViT CLIP (it has ``visual.class_embedding`` / ``visual.proj``) maps its
visual tower onto mmpretrain's ``VisionTransformer`` names
(:data:`VIT_KEY_TABLE`, ``R`` = ``visual.transformer.resblocks.{i}.``,
``B`` = ``backbone.layers.{i}.``; the facts as in mmpretrain's
``tools/model_converters/openai-clip_to_mmpretrain-clip.py``):

* ``visual.conv1.weight`` -> ``backbone.patch_embed.projection.weight``;
* ``visual.class_embedding`` (C,) -> ``backbone.cls_token`` (1, 1, C);
* ``visual.positional_embedding`` (N, C) -> ``backbone.pos_embed``
  (1, N, C) (:data:`VIT_LEADING_ONES`);
* ``visual.ln_pre.*`` -> ``backbone.pre_norm.*``;
* ``R.ln_1.*`` / ``R.ln_2.*`` -> ``B.ln1.*`` / ``B.ln2.*``;
* ``R.attn.in_proj_weight`` (3C, C) / ``in_proj_bias`` (3C,) ->
  ``B.attn.qkv.weight`` / ``.bias`` unchanged (both pack q, k, v in that
  order along dim 0);
* ``R.attn.out_proj.*`` -> ``B.attn.proj.*``;
* ``R.mlp.c_fc.*`` -> ``B.ffn.layers.0.0.*``; ``R.mlp.c_proj.*`` ->
  ``B.ffn.layers.1.*``;
* ``visual.ln_post.*`` -> ``backbone.ln1.*`` (mmpretrain's final norm);
* ``visual.proj`` (C, D), used as ``x @ proj`` -> ``backbone.proj``
  (C, D), used the same way by :class:`CLIPViT`.

Dropped: ``logit_scale``, ``input_resolution``, ``context_length``,
``vocab_size``. Not in CLIP (randomly initialised by the model):
``backbone.attnpool.connect.*`` (CRIS's new residual) and every head key.

Usage::

    python tools/model_converters/clip_to_ris.py RN50.pt \\
        pretrain/clip_rn50_ris.pth \\
        [--config configs/cris/cris_r50_8xb8-50e_refcoco-416x416.py]

Without ``--config`` the output has the keys above (``backbone.*`` +
``text_encoder.*``, CRIS's layout). With ``--config`` the layout is read
from the config (:func:`layout_from_config`), so every CLIP-based config
takes the output unchanged through ``load_from``:

* ``backbone=CLIPResNet / CLIPViT`` (CRIS, mix configs): ``backbone.*``;
  ``text_encoder=RefCLIPTextEncoder``: ``text_encoder.*``;
* ``backbone=DualEncoderBackbone`` (ETRIS ViT / RN, BarLeRIa, mix
  configs): the visual tower goes to ``backbone.visual.*`` and the text
  tower to ``backbone.text.*``;
* a tower the config does not take from CLIP (e.g. a MiniLM text encoder)
  is left out, and the script says so.

The converted tensors are then checked against the model of that config
(every converted key must exist with the same shape, and only
``attnpool.connect`` and BN ``num_batches_tracked`` may be missing from the
CLIP towers); nothing is written on a mismatch. A ViT's ``pos_embed`` may
differ in its number of rows (e.g. 197 at 224 vs 677 for
``img_size=416``): ``VisionTransformer`` resizes it bicubically when the
checkpoint is loaded.
"""
import argparse
import os.path as osp
import re
import sys
import zipfile
from collections import OrderedDict
from typing import Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import converter_utils as cu  # noqa: E402

TEXT = 'text_encoder.clip.text_model.'
LAYER = TEXT + 'encoder.layers.{i}.'

# (OpenAI prefix, our prefix); {i} matches a layer index.
# CLIP ResNet visual tower: OpenAI's module names are kept.
RN_KEY_TABLE: List[Tuple[str, str]] = [('visual.', 'backbone.')]
# CLIP ViT visual tower -> mmpretrain VisionTransformer (+ CLIPViT.proj).
VIT_RES = 'visual.transformer.resblocks.{i}.'
VIT_LAYER = 'backbone.layers.{i}.'
VIT_KEY_TABLE: List[Tuple[str, str]] = [
    ('visual.conv1.', 'backbone.patch_embed.projection.'),
    ('visual.class_embedding', 'backbone.cls_token'),
    ('visual.positional_embedding', 'backbone.pos_embed'),
    ('visual.ln_pre.', 'backbone.pre_norm.'),
    (VIT_RES + 'ln_1.', VIT_LAYER + 'ln1.'),
    (VIT_RES + 'attn.in_proj_weight', VIT_LAYER + 'attn.qkv.weight'),
    (VIT_RES + 'attn.in_proj_bias', VIT_LAYER + 'attn.qkv.bias'),
    (VIT_RES + 'attn.out_proj.', VIT_LAYER + 'attn.proj.'),
    (VIT_RES + 'ln_2.', VIT_LAYER + 'ln2.'),
    (VIT_RES + 'mlp.c_fc.', VIT_LAYER + 'ffn.layers.0.0.'),
    (VIT_RES + 'mlp.c_proj.', VIT_LAYER + 'ffn.layers.1.'),
    ('visual.ln_post.', 'backbone.ln1.'),
    ('visual.proj', 'backbone.proj'),
]
# Leading singleton dims ours has over OpenAI's tensor: (C,) -> (1, 1, C),
# (N, C) -> (1, N, C).
VIT_LEADING_ONES: Dict[str, int] = {
    'backbone.cls_token': 2,
    'backbone.pos_embed': 1,
}
VIT_MARKERS = ('visual.class_embedding', 'visual.proj')
VIT_REQUIRED = ('visual.conv1.weight', 'visual.class_embedding',
                'visual.positional_embedding', 'visual.ln_post.weight',
                'visual.proj')
TEXT_KEY_TABLE: List[Tuple[str, str]] = [
    ('token_embedding.', TEXT + 'embeddings.token_embedding.'),
    ('positional_embedding', TEXT + 'embeddings.position_embedding.weight'),
    ('transformer.resblocks.{i}.ln_1.', LAYER + 'layer_norm1.'),
    ('transformer.resblocks.{i}.attn.out_proj.',
     LAYER + 'self_attn.out_proj.'),
    ('transformer.resblocks.{i}.mlp.c_fc.', LAYER + 'mlp.fc1.'),
    ('transformer.resblocks.{i}.mlp.c_proj.', LAYER + 'mlp.fc2.'),
    ('transformer.resblocks.{i}.ln_2.', LAYER + 'layer_norm2.'),
    ('ln_final.', TEXT + 'final_layer_norm.'),
]
KEY_TABLE: List[Tuple[str, str]] = RN_KEY_TABLE + TEXT_KEY_TABLE
# OpenAI packed q/k/v -> our three projections (in q, k, v order).
SPLIT_TABLE: List[Tuple[str, Tuple[str, str, str]]] = [
    ('transformer.resblocks.{i}.attn.in_proj_weight',
     tuple(LAYER + f'self_attn.{n}_proj.weight' for n in 'qkv')),
    ('transformer.resblocks.{i}.attn.in_proj_bias',
     tuple(LAYER + f'self_attn.{n}_proj.bias' for n in 'qkv')),
]
# Stored transposed: OpenAI x @ P  <->  nn.Linear weight P^T.
TRANSPOSE_TABLE: List[Tuple[str, str]] = [
    ('text_projection', 'text_encoder.clip.text_projection.weight'),
]
DROP = ('logit_scale', 'input_resolution', 'context_length', 'vocab_size')
NOT_IN_CLIP = re.compile(r'^backbone\.attnpool\.connect\.')


def _regex(template: str, exact: bool = False) -> 're.Pattern':
    pattern = re.escape(template).replace(re.escape('{i}'), r'(?P<i>\d+)')
    return re.compile('^' + pattern + ('$' if exact else ''))


def key_table(vit: bool = False) -> List[Tuple[str, str]]:
    """The (OpenAI, ours) prefix table for a ResNet (:data:`KEY_TABLE`) or
    a ViT (:data:`VIT_KEY_TABLE` + :data:`TEXT_KEY_TABLE`) CLIP."""
    return VIT_KEY_TABLE + TEXT_KEY_TABLE if vit else KEY_TABLE


def map_key(key: str, reverse: bool = False, vit: bool = False) -> str:
    """Rename ``key`` by the first matching prefix of :func:`key_table`
    (OpenAI -> ours, or ours -> OpenAI with ``reverse``).

    Raises:
        KeyError: No entry matches.
    """
    for openai, ours in key_table(vit):
        src, dst = (ours, openai) if reverse else (openai, ours)
        m = _regex(src).match(key)
        if m:
            return dst.format(**m.groupdict()) + key[m.end():]
    arch = 'ViT' if vit else 'ResNet'
    raise KeyError(f'no CLIP conversion rule for key {key!r} ({arch} CLIP)')


def _convert_one(key: str, value: Tensor,
                 vit: bool = False) -> Dict[str, Tensor]:
    """One OpenAI tensor -> our tensor(s)."""
    for openai, ours in SPLIT_TABLE:
        m = _regex(openai, exact=True).match(key)
        if m:
            parts = value.chunk(3, dim=0)  # q, k, v: (D, ...) each
            return {o.format(**m.groupdict()): p.contiguous()
                    for o, p in zip(ours, parts)}
    for openai, ours in TRANSPOSE_TABLE:
        if key == openai:
            return {ours: value.t().contiguous()}  # (C', D)
    ours = map_key(key, vit=vit)
    ones = VIT_LEADING_ONES.get(ours, 0) if vit else 0
    # (C,) -> (1, 1, C) / (N, C) -> (1, N, C)
    return {ours: value.reshape((1, ) * ones + tuple(value.shape))}


def _is_vit(state: Dict[str, Tensor]) -> bool:
    """Whether ``state`` (OpenAI layout) is a ViT CLIP; checks a ResNet's
    or a ViT's essential keys.

    Raises:
        ValueError: ViT markers present but a required ViT key is missing.
        KeyError: Neither a CLIP ResNet nor a CLIP ViT.
    """
    markers = [k for k in VIT_MARKERS if k in state]
    if markers:
        missing = [k for k in VIT_REQUIRED if k not in state]
        if missing:
            raise ValueError(f'incomplete ViT CLIP checkpoint (has '
                             f'{markers}): missing {missing}')
        return True
    if 'visual.attnpool.positional_embedding' not in state:
        raise KeyError('not an OpenAI CLIP state dict: no ResNet '
                       "'visual.attnpool.positional_embedding' and no ViT "
                       f'{list(VIT_MARKERS)}')
    return False


def convert_clip(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """An OpenAI CLIP ResNet or ViT state dict -> our ``backbone.*`` +
    ``text_encoder.*`` state dict (float32).

    Raises:
        ValueError: An incomplete ViT CLIP.
        KeyError: Not a CLIP ResNet / ViT, or a key without a rule.
    """
    vit = _is_vit(state)
    out = OrderedDict()
    for key, value in state.items():
        if key in DROP:
            continue
        if value.is_floating_point():
            value = value.float()
        out.update(_convert_one(key, value, vit=vit))
    return out


def _merge_qkv(state: Dict[str, Tensor]
               ) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """Split ``state`` into (OpenAI packed ``in_proj_*`` tensors built from
    our q/k/v projections, the remaining keys of ours)."""
    rest = dict(state)
    packed = OrderedDict()
    for openai, ours in SPLIT_TABLE:
        q_pattern = _regex(ours[0], exact=True)
        for key in [k for k in state if q_pattern.match(k)]:
            idx = q_pattern.match(key).groupdict()
            names = [o.format(**idx) for o in ours]
            packed[openai.format(**idx)] = torch.cat(
                [rest.pop(n) for n in names], dim=0)  # (3D, ...)
    return packed, rest


def to_openai(state: Dict[str, Tensor],
              include_connect: bool = False) -> Dict[str, Tensor]:
    """Our ``backbone.*`` / ``text_encoder.*`` keys -> the OpenAI CLIP
    layout (the inverse of :func:`convert_clip`); CRIS's
    ``attnpool.connect`` (unless ``include_connect``, as in CRIS / ETRIS
    checkpoints, whose CLIP holds it) and every other key are left out. A
    backbone with ``backbone.cls_token`` is taken as a :class:`CLIPViT`.

    Raises:
        KeyError: A backbone / text-encoder key without a rule.
    """
    state = {k: v for k, v in state.items()
             if k.startswith(('backbone.', 'text_encoder.'))
             and (include_connect or not NOT_IN_CLIP.match(k))}
    vit = 'backbone.cls_token' in state
    out, rest = _merge_qkv(state)
    transposed = {ours: openai for openai, ours in TRANSPOSE_TABLE}
    for key, value in rest.items():
        if key in transposed:
            out[transposed[key]] = value.t().contiguous()
            continue
        ones = VIT_LEADING_ONES.get(key, 0) if vit else 0
        # (1, 1, C) -> (C,) / (1, N, C) -> (N, C)
        out[map_key(key, reverse=True, vit=vit)] = value.reshape(
            value.shape[ones:])
    return out


def load_openai(path: str) -> Dict[str, Tensor]:
    """The CLIP state dict in ``path``: an OpenAI TorchScript archive (read
    without ``torch.jit.load``, see the module doc) or a plain state dict
    (``torch.load(weights_only=True)``, optionally under ``'state_dict'``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RuntimeError, pickle.UnpicklingError, ValueError: An unreadable or
            refused file (the message names it).
    """
    if _is_torchscript(path):
        return cu.read_torchscript_state_dict(path)
    ckpt = cu.load_upstream(path)
    if isinstance(ckpt, dict) and 'state_dict' in ckpt:
        ckpt = ckpt['state_dict']
    if not isinstance(ckpt, dict):
        raise KeyError(f'{path}: expected a CLIP state dict, got '
                       f'{type(ckpt).__name__}')
    return ckpt


def _is_torchscript(path: str) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip with
    ``<root>/constants.pkl`` and ``<root>/code/``)."""
    if not (osp.isfile(path) and zipfile.is_zipfile(path)):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.count('/') == 1 and n.endswith('/constants.pkl')
               for n in names) and any('/code/' in n for n in names)


class Layout(NamedTuple):
    """Where a config's model takes the CLIP towers: key prefixes of the
    visual and text tower, None for a tower not taken from CLIP."""
    visual: Optional[str] = 'backbone.'
    text: Optional[str] = 'text_encoder.'


CLIP_VISUAL_TYPES = ('CLIPResNet', 'CLIPViT')
CLIP_TEXT_TYPES = ('RefCLIPTextEncoder', )


def layout_from_config(config: str) -> Layout:
    """The CLIP layout of ``config``'s model (see the module doc).

    Raises:
        ValueError: The model takes neither tower from CLIP (names the
            config and the types it has).
    """
    from mmengine.config import Config
    model = Config.fromfile(config).model

    def kind(cfg: Optional[dict]) -> Optional[str]:
        return cfg.get('type') if isinstance(cfg, dict) else None

    backbone = model.get('backbone')
    if kind(backbone) == 'DualEncoderBackbone':
        vis, txt = backbone.get('visual'), backbone.get('text')
        layout = Layout(
            'backbone.visual.' if kind(vis) in CLIP_VISUAL_TYPES else None,
            'backbone.text.' if kind(txt) in CLIP_TEXT_TYPES else None)
        found = (kind(vis), kind(txt))
    else:
        txt = model.get('text_encoder')
        layout = Layout(
            'backbone.' if kind(backbone) in CLIP_VISUAL_TYPES else None,
            'text_encoder.' if kind(txt) in CLIP_TEXT_TYPES else None)
        found = (kind(backbone), kind(txt))
    if layout == Layout(None, None):
        raise ValueError(
            f'{config}: no CLIP tower to convert into (visual / text types '
            f'{found}); valid: visual {CLIP_VISUAL_TYPES}, text '
            f'{CLIP_TEXT_TYPES}, directly or inside DualEncoderBackbone')
    return layout


def relayout(converted: Dict[str, Tensor],
             layout: Layout) -> Dict[str, Tensor]:
    """Move :func:`convert_clip`'s ``backbone.*`` / ``text_encoder.*`` keys
    to ``layout``'s prefixes; a tower whose prefix is None is dropped."""
    out = OrderedDict()
    for key, value in converted.items():
        for ours, target in (('backbone.', layout.visual),
                             ('text_encoder.', layout.text)):
            if key.startswith(ours):
                if target is not None:
                    out[target + key[len(ours):]] = value
                break
        else:
            raise KeyError(f'unexpected converted key {key!r}')
    return out


def check_against_config(converted: Dict[str, Tensor], config: str,
                         layout: Optional[Layout] = None) -> None:
    """Check ``converted`` (already in ``layout``; default CRIS's) against
    the model built from ``config``.

    Raises:
        KeyError: Converted keys the model lacks, or CLIP-tower keys the
            conversion did not produce (other than ``attnpool.connect``
            and ``num_batches_tracked``).
        ValueError: A shape differs.
    """
    layout = layout or Layout()
    prefixes = [p for p in layout if p is not None]
    cu.check_against_model(
        converted, cu.model_shapes(config), config, prefixes=prefixes,
        may_miss=re.compile(r'\.attnpool\.connect\.|num_batches_tracked$'),
        resizable=re.compile(r'(^|\.)pos_embed$'))


def parse_args() -> argparse.Namespace:
    """Command-line arguments: ``src``, ``dst`` and optional ``--config``."""
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0],
        epilog='The TorchScript archive is read without torch.jit.load (its '
        'tensors only, through a restricted unpickler), so no code from the '
        'file runs.')
    parser.add_argument('src',
                        help='OpenAI CLIP RN50.pt / RN101.pt / ViT-B-16.pt')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument('--config', help='write the layout of this config '
                        "(CRIS, ETRIS, BarLeRIa, mix) and verify against its "
                        'model')
    return parser.parse_args()


def convert_for_config(state: Dict[str, Tensor],
                       config: Optional[str]) -> Dict[str, Tensor]:
    """:func:`convert_clip`, then (with ``config``) moved to the config's
    layout and checked against its model."""
    converted = convert_clip(state)
    if config:
        layout = layout_from_config(config)
        converted = relayout(converted, layout)
        for tower, prefix in zip(('visual', 'text'), layout):
            if prefix is None:
                print(f'{config} does not take the CLIP {tower} tower; it '
                      'is left out')
        check_against_config(converted, config, layout)
    return converted


def main() -> None:
    """Convert ``src``, optionally into ``--config``'s layout (verified),
    and save ``{'state_dict': ..., 'meta': {'source': src}}`` to ``dst``."""
    args = parse_args()
    converted = convert_for_config(load_openai(args.src), args.config)
    cu.save_converted(converted, args.dst, args.src)


if __name__ == '__main__':
    main()
