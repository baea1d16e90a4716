"""Convert an OpenAI CLIP ResNet checkpoint (RN50 / RN101) into the
``backbone.*`` (:class:`CLIPResNet`) and ``text_encoder.*``
(:class:`RefCLIPTextEncoder`) keys of ris_plugins' ``RefSegmentor``, as CRIS
initialises its encoders (``model/clip.py`` ``build_model``).

Input: the OpenAI TorchScript archive (``RN50.pt``, loaded with
``torch.jit.load(...).state_dict()``) or a plain state dict saved with
``torch.save`` (optionally under ``'state_dict'``). Half-precision tensors
are cast to float32.

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

Dropped: ``logit_scale``, ``input_resolution``, ``context_length``,
``vocab_size``. Not in CLIP (randomly initialised by the model):
``backbone.attnpool.connect.*`` (CRIS's new residual) and every head key.
A ViT CLIP (``visual.proj`` / ``visual.class_embedding``) is rejected.

Usage::

    python tools/model_converters/clip_to_ris.py RN50.pt \\
        pretrain/clip_rn50_ris.pth \\
        [--config configs/cris/cris_r50_8xb8-50e_refcoco-416x416.py]

With ``--config`` the converted tensors are checked against the model of
that config (every converted key must exist with the same shape, and only
``attnpool.connect`` and BN ``num_batches_tracked`` may be missing from
backbone / text encoder); nothing is written on a mismatch. Point the
config's ``load_from`` at the output.
"""
import argparse
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch
from torch import Tensor

TEXT = 'text_encoder.clip.text_model.'
LAYER = TEXT + 'encoder.layers.{i}.'

# (OpenAI prefix, our prefix); {i} matches a layer index.
KEY_TABLE: List[Tuple[str, str]] = [
    ('visual.', 'backbone.'),
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


def map_key(key: str, reverse: bool = False) -> str:
    """Rename ``key`` by the first matching prefix of :data:`KEY_TABLE`
    (OpenAI -> ours, or ours -> OpenAI with ``reverse``).

    Raises:
        KeyError: No entry matches.
    """
    for openai, ours in KEY_TABLE:
        src, dst = (ours, openai) if reverse else (openai, ours)
        m = _regex(src).match(key)
        if m:
            return dst.format(**m.groupdict()) + key[m.end():]
    raise KeyError(f'no CLIP conversion rule for key {key!r}')


def _convert_one(key: str, value: Tensor) -> Dict[str, Tensor]:
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
    return {map_key(key): value}


def _check_resnet(state: Dict[str, Tensor]) -> None:
    vit = [k for k in ('visual.proj', 'visual.class_embedding')
           if k in state]
    if vit:
        raise ValueError(f'this is a ViT CLIP checkpoint (has {vit}); '
                         'clip_to_ris converts ResNet CLIPs (RN50, RN101)')
    if 'visual.attnpool.positional_embedding' not in state:
        raise KeyError('not an OpenAI CLIP ResNet state dict: no '
                       "'visual.attnpool.positional_embedding'")


def convert_clip(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """An OpenAI CLIP ResNet state dict -> our ``backbone.*`` +
    ``text_encoder.*`` state dict (float32).

    Raises:
        ValueError: A ViT CLIP.
        KeyError: Not a CLIP ResNet, or a key without a rule.
    """
    _check_resnet(state)
    out = OrderedDict()
    for key, value in state.items():
        if key in DROP:
            continue
        if value.is_floating_point():
            value = value.float()
        out.update(_convert_one(key, value))
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


def to_openai(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Our ``backbone.*`` / ``text_encoder.*`` keys -> the OpenAI CLIP
    layout (the inverse of :func:`convert_clip`); CRIS's
    ``attnpool.connect`` and every other key are left out.

    Raises:
        KeyError: A backbone / text-encoder key without a rule.
    """
    state = {k: v for k, v in state.items()
             if k.startswith(('backbone.', 'text_encoder.'))
             and not NOT_IN_CLIP.match(k)}
    out, rest = _merge_qkv(state)
    transposed = {ours: openai for openai, ours in TRANSPOSE_TABLE}
    for key, value in rest.items():
        if key in transposed:
            out[transposed[key]] = value.t().contiguous()
        else:
            out[map_key(key, reverse=True)] = value
    return out


def load_openai(path: str) -> Dict[str, Tensor]:
    """Load an OpenAI TorchScript archive or a plain (weights-only) state
    dict from ``path``.

    Raises:
        FileNotFoundError: ``path`` does not exist (from torch).
    """
    try:
        return torch.jit.load(path, map_location='cpu').state_dict()
    except RuntimeError:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
        return ckpt.get('state_dict', ckpt)


def check_against_config(converted: Dict[str, Tensor], config: str) -> None:
    """Check ``converted`` against the model built from ``config``.

    Raises:
        KeyError: Converted keys the model lacks, or backbone / text keys
            the conversion did not produce (other than ``connect``).
        ValueError: A shape differs.
    """
    from mmengine.config import Config

    import ris_plugins  # noqa: F401
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    target = MODELS.build(Config.fromfile(config).model).state_dict()
    unexpected = sorted(set(converted) - set(target))
    # BN's num_batches_tracked is filled in by BatchNorm when absent.
    missing = sorted(
        k for k in target if k.startswith(('backbone.', 'text_encoder.'))
        and k not in converted and not NOT_IN_CLIP.match(k)
        and not k.endswith('num_batches_tracked'))
    if unexpected or missing:
        raise KeyError(f'conversion does not match {config}: unexpected '
                       f'{unexpected[:5]}, missing {missing[:5]}')
    bad = [(k, tuple(v.shape), tuple(target[k].shape))
           for k, v in converted.items() if v.shape != target[k].shape]
    if bad:
        raise ValueError(f'shape mismatch (key, converted, model): '
                         f'{bad[:5]}')


def parse_args() -> argparse.Namespace:
    """Command-line arguments: ``src``, ``dst`` and optional ``--config``."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='OpenAI CLIP RN50.pt / RN101.pt')
    parser.add_argument('dst', help='output checkpoint path')
    parser.add_argument('--config', help='verify against this config')
    return parser.parse_args()


def main() -> None:
    """Convert ``src``, optionally verify it, and save
    ``{'state_dict': ..., 'meta': {'source': src}}`` to ``dst``."""
    args = parse_args()
    converted = convert_clip(load_openai(args.src))
    if args.config:
        check_against_config(converted, args.config)
    torch.save({'state_dict': converted, 'meta': {'source': args.src}},
               args.dst)
    print(f'wrote {len(converted)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
