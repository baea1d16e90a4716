"""Convert an official SAM checkpoint (``sam_vit_b_01ec64.pth`` /
``sam_vit_l_0b3195.pth`` / ``sam_vit_h_4b8939.pth``) into the
``backbone.*`` keys of ris_plugins' :class:`SAMViT` (mmpretrain
``ViTSAM`` names), optionally adding CLIP's text tower as
``text_encoder.*`` (HARIS: frozen SAM + frozen CLIP text).

Input: a plain ``torch.save`` state dict of ``segment_anything``'s ``Sam``
(``build_sam.py``), optionally under ``'state_dict'``. Only
``image_encoder.*`` is used; ``prompt_encoder.*`` / ``mask_decoder.*``
are dropped (HARIS uses SAM's image encoder only).

Key mapping, SAM (``modeling/image_encoder.py`` ``ImageEncoderViT``) ->
ours (:data:`KEY_TABLE`, used in both directions; ``E`` =
``image_encoder.``, ``S`` = ``E.blocks.{i}.``, ``L`` =
``backbone.layers.{i}.``):

* ``E.pos_embed`` (1, 64, 64, C) -> ``backbone.pos_embed`` (same shape;
  ``ViTSAM`` resizes it bicubically on load when ``img_size`` differs);
* ``E.patch_embed.proj.*`` -> ``backbone.patch_embed.projection.*``;
* ``S.norm1.*`` / ``S.norm2.*`` -> ``L.ln1.*`` / ``L.ln2.*``;
* ``S.attn.qkv.*``, ``S.attn.proj.*``, ``S.attn.rel_pos_h`` / ``_w`` ->
  the same names under ``L`` (relative tables of global blocks are
  resized linearly on load when ``img_size`` differs);
* ``S.mlp.lin1.*`` / ``S.mlp.lin2.*`` -> ``L.ffn.layers.0.0.*`` /
  ``L.ffn.layers.1.*``;
* ``E.neck.{0,1,2,3}.*`` (conv1x1, LayerNorm2d, conv3x3, LayerNorm2d) ->
  ``backbone.channel_reduction.{0,1,2,3}.*``.

No tensor changes shape or layout (both pack q, k, v along dim 0 of
``qkv``). ``--clip`` adds the text tower of an OpenAI CLIP checkpoint
(TorchScript or state dict) through ``clip_to_ris.py``'s text rules; its
visual tower is dropped. Both files are read without running code from
them (``torch.load(weights_only=True)``; TorchScript archives through
``clip_to_ris.load_openai``, not ``torch.jit.load``).

Usage::

    python tools/model_converters/sam_to_ris.py sam_vit_b_01ec64.pth \\
        pretrain/sam-b_clip-b16_ris.pth --clip ViT-B-16.pt \\
        [--config configs/haris/haris_sam-vit-b_1xb16-50e_refcoco-480x480.py]

With ``--config`` the result is checked against that model (every
converted key must exist with the same shape, except the resizable
positional tables; no backbone key, and with ``--clip`` no text-encoder
key, may be missing); nothing is written on a mismatch. Point the
config's ``load_from`` at the output.
"""
import argparse
import importlib.util
import os.path as osp
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

ENC = 'image_encoder.'
SAM_BLOCK = ENC + 'blocks.{i}.'
OUR_LAYER = 'backbone.layers.{i}.'
# (SAM prefix, our prefix); {i} matches a block / layer index.
KEY_TABLE: List[Tuple[str, str]] = [
    (ENC + 'pos_embed', 'backbone.pos_embed'),
    (ENC + 'patch_embed.proj.', 'backbone.patch_embed.projection.'),
    (SAM_BLOCK + 'norm1.', OUR_LAYER + 'ln1.'),
    (SAM_BLOCK + 'attn.qkv.', OUR_LAYER + 'attn.qkv.'),
    (SAM_BLOCK + 'attn.proj.', OUR_LAYER + 'attn.proj.'),
    (SAM_BLOCK + 'attn.rel_pos_h', OUR_LAYER + 'attn.rel_pos_h'),
    (SAM_BLOCK + 'attn.rel_pos_w', OUR_LAYER + 'attn.rel_pos_w'),
    (SAM_BLOCK + 'norm2.', OUR_LAYER + 'ln2.'),
    (SAM_BLOCK + 'mlp.lin1.', OUR_LAYER + 'ffn.layers.0.0.'),
    (SAM_BLOCK + 'mlp.lin2.', OUR_LAYER + 'ffn.layers.1.'),
    (ENC + 'neck.', 'backbone.channel_reduction.'),
]
SAM_REQUIRED = (ENC + 'pos_embed', ENC + 'patch_embed.proj.weight',
                ENC + 'blocks.0.attn.qkv.weight', ENC + 'neck.0.weight')
RESIZABLE = re.compile(
    r'^backbone\.(pos_embed|layers\.\d+\.attn\.rel_pos_[hw])$')


def _regex(template: str) -> 're.Pattern':
    pattern = re.escape(template).replace(re.escape('{i}'), r'(?P<i>\d+)')
    return re.compile('^' + pattern)


def map_key(key: str, reverse: bool = False) -> str:
    """Rename ``key`` by the first matching prefix of :data:`KEY_TABLE`
    (SAM -> ours, or ours -> SAM with ``reverse``).

    Raises:
        KeyError: No entry matches.
    """
    for sam, ours in KEY_TABLE:
        src, dst = (ours, sam) if reverse else (sam, ours)
        m = _regex(src).match(key)
        if m:
            return dst.format(**m.groupdict()) + key[m.end():]
    raise KeyError(f'no SAM conversion rule for key {key!r}')


def convert_sam(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """SAM ``image_encoder.*`` -> our ``backbone.*`` (float32); other SAM
    keys (prompt encoder, mask decoder) are dropped.

    Raises:
        KeyError: Not a SAM checkpoint (an essential image-encoder key is
            missing), or an image-encoder key without a rule.
    """
    missing = [k for k in SAM_REQUIRED if k not in state]
    if missing:
        raise KeyError(f'not a SAM checkpoint: missing {missing}')
    out = OrderedDict()
    for key, value in state.items():
        if not key.startswith(ENC):
            continue
        out[map_key(key)] = value.float() if value.is_floating_point() \
            else value
    return out


def to_sam(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Our ``backbone.*`` keys -> SAM's ``image_encoder.*`` (the inverse of
    :func:`convert_sam`); other keys are left out.

    Raises:
        KeyError: A backbone key without a rule.
    """
    return OrderedDict((map_key(k, reverse=True), v)
                       for k, v in state.items()
                       if k.startswith('backbone.'))


def _clip_module():
    """``clip_to_ris.py`` next to this file, imported by path (tools/ is
    not a package)."""
    path = osp.join(osp.dirname(osp.abspath(__file__)), 'clip_to_ris.py')
    spec = importlib.util.spec_from_file_location('clip_to_ris', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def convert_clip_text(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """The text tower of an OpenAI CLIP state dict -> our
    ``text_encoder.*`` keys (``clip_to_ris.py`` rules; ``visual.*`` and the
    scalars are dropped).

    Raises:
        KeyError: No text keys, or a text key without a rule.
    """
    clip = _clip_module()
    out = OrderedDict()
    for key, value in state.items():
        if key.startswith('visual.') or key in clip.DROP:
            continue
        if value.is_floating_point():
            value = value.float()
        out.update(clip._convert_one(key, value, vit=False))
    if not out:
        raise KeyError('no CLIP text-tower keys (token_embedding, '
                       'transformer.*, ...) in the --clip checkpoint')
    return out


def load_state(path: str) -> Dict[str, Tensor]:
    """A plain state dict (``weights_only=True``, optionally under
    ``'state_dict'``) or a TorchScript archive's tensors (read without
    ``torch.jit.load``, see ``clip_to_ris.load_openai``); no code from the
    file runs."""
    return _clip_module().load_openai(path)


def check_against_config(converted: Dict[str, Tensor], config: str) -> None:
    """Check ``converted`` against the model built from ``config``.

    Raises:
        KeyError: Converted keys the model lacks, or backbone keys (and,
            when any ``text_encoder.*`` key was converted, text-encoder
            keys) that were not converted.
        ValueError: A shape differs (positional tables only in size).
    """
    from mmengine.config import Config

    import ris_plugins  # noqa: F401
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    with torch.device('meta'):
        target = MODELS.build(Config.fromfile(config).model).state_dict()
    prefixes = ('backbone.', ) + (('text_encoder.', ) if any(
        k.startswith('text_encoder.') for k in converted) else ())
    unexpected = sorted(set(converted) - set(target))
    missing = sorted(k for k in target
                     if k.startswith(prefixes) and k not in converted)
    if unexpected or missing:
        raise KeyError(f'conversion does not match {config}: unexpected '
                       f'{unexpected[:5]}, missing {missing[:5]}')
    bad = [(k, tuple(v.shape), tuple(target[k].shape))
           for k, v in converted.items() if v.shape != target[k].shape and
           not (RESIZABLE.match(k) and v.dim() == target[k].dim()
                and v.shape[-1] == target[k].shape[-1])]
    if bad:
        raise ValueError(f'shape mismatch (key, converted, model): '
                         f'{bad[:5]}')


def convert(sam_path: str, clip_path: Optional[str] = None,
            config: Optional[str] = None) -> Dict[str, Tensor]:
    """SAM (+ CLIP text) checkpoint files -> our state dict, checked
    against ``config`` when given."""
    converted = convert_sam(load_state(sam_path))
    if clip_path:
        converted.update(convert_clip_text(load_state(clip_path)))
    if config:
        check_against_config(converted, config)
    return converted


def parse_args() -> argparse.Namespace:
    """Command-line arguments: ``src``, ``dst``, ``--clip``, ``--config``."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='SAM checkpoint, e.g. '
                        'sam_vit_b_01ec64.pth')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument('--clip', help='OpenAI CLIP checkpoint whose text '
                        'tower becomes text_encoder.* (e.g. ViT-B-16.pt)')
    parser.add_argument('--config', help='verify against this config')
    return parser.parse_args()


def main() -> None:
    """Convert, optionally verify, and save ``{'state_dict': ..., 'meta':
    {'source': ...}}`` to ``dst``."""
    args = parse_args()
    converted = convert(args.src, args.clip, args.config)
    torch.save({'state_dict': converted,
                'meta': {'source': [args.src, args.clip]}}, args.dst)
    print(f'wrote {len(converted)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
