"""Stepping the CLIP text tower (:class:`RefCLIPTextEncoder`, ``transformers``
``CLIPTextModelWithProjection``) one block at a time for
:class:`DualEncoderBackbone`, with optional shortcut transforms (BarLeRIa
``snf.py``); the library layers are called, never copied."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from ...utils import TextFeatures
from .state import DualEncoderState


def check_text_tower(text: nn.Module) -> None:
    """Raises:
        TypeError: ``text`` has no ``transformers`` CLIP text model at
            ``.clip.text_model`` (not a ``RefCLIPTextEncoder``)."""
    if not hasattr(getattr(text, 'clip', None), 'text_model'):
        raise TypeError(
            f'DualEncoderBackbone needs a RefCLIPTextEncoder-like text '
            f'tower (.clip.text_model), got {type(text).__name__}')


def clip_text_block(
        layer: nn.Module,
        x: Tensor,
        causal: Tensor,
        shortcuts: Optional[Tuple[nn.Module, nn.Module]] = None) -> Tensor:
    """``transformers`` ``CLIPEncoderLayer`` with optional shortcut
    transforms (SNF): ``x = s1(x) + Attn(LN1 x)``, ``x = s2(x) + MLP(LN2
    x)``; without them exactly the library layer. x (B, L, C), causal
    (1, 1, L, L) additive mask."""
    if shortcuts is None:
        return layer(x, None, causal)[0]
    s1, s2 = shortcuts
    a = layer.self_attn(
        hidden_states=layer.layer_norm1(x),
        attention_mask=None,
        causal_attention_mask=causal)[0]  # (B, L, C)
    x = s1(x) + a
    return s2(x) + layer.mlp(layer.layer_norm2(x))  # (B, L, C)


def causal_mask(length: int, ref: Tensor) -> Tensor:
    """CLIP's causal mask for ``length`` tokens: (1, 1, L, L) additive,
    the dtype's minimum above the diagonal (as ``transformers``)."""
    mask = torch.full((length, length),
                      torch.finfo(ref.dtype).min,
                      dtype=ref.dtype,
                      device=ref.device)
    return mask.triu(1)[None, None]


def embed_text(text: nn.Module, tokens: Tensor) -> Tensor:
    """Token + position embedding of (B, L) CLIP-BPE ids -> (B, L, C_t).

    Raises:
        ValueError: As :meth:`RefCLIPTextEncoder.forward` (not 2-D, longer
            than ``context_length``, no EOT token).
    """
    text._check_tokens(tokens)
    return text.clip.text_model.embeddings(input_ids=tokens)  # (B, L, C_t)


def run_text_block(text: nn.Module, state: DualEncoderState, i: int,
                   shortcuts: Optional[Tuple[nn.Module, nn.Module]]) -> None:
    """Run encoder layer ``i`` (0-based) on ``state.txt`` (B, L', C_t)
    with the causal mask of its current length."""
    layer = text.clip.text_model.encoder.layers[i]
    state.txt = clip_text_block(layer, state.txt,
                                causal_mask(state.txt.shape[1], state.txt),
                                shortcuts)  # (B, L', C_t)


def text_features(text: nn.Module, state: DualEncoderState) -> TextFeatures:
    """The text output as :class:`RefCLIPTextEncoder`: ``ln_final`` words
    (B, L', C_t), EOT token @ ``text_projection`` (B, D_t), pad mask (B,
    L'); prepended tokens included."""
    words = text.clip.text_model.final_layer_norm(state.txt)  # (B, L', C_t)
    batch = torch.arange(words.shape[0], device=words.device)
    sent = text.clip.text_projection(words[batch, state.eot_index])  # (B, D_t)
    return TextFeatures(words, sent, state.pad_mask)
