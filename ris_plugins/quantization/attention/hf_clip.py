"""Adapters for transformers' ``CLIPAttention`` (eager) and
``CLIPSdpaAttention`` (the default on CPU in transformers 4.51)."""
from typing import Optional, Tuple

import torch.nn as nn
from torch import Tensor
from transformers.models.clip.modeling_clip import (CLIPAttention,
                                                    CLIPSdpaAttention)

from .registry import register_attention_adapter


def _clip_forward(self, hidden_states: Tensor,
                  attention_mask: Optional[Tensor],
                  causal_attention_mask: Optional[Tensor],
                  output_attentions: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """``softmax(matmul1(q * d**-0.5, kᵀ) + causal + padding)`` ->
    ``matmul2(., v)`` -> ``out_proj``. hidden_states (B, N, C); masks
    additive (B, 1, N, N). Returns (B, N, C) and, if ``output_attentions``,
    the (pre-dropout) probabilities (B, H, N, N), else None."""
    b, n, c = hidden_states.shape

    def heads(x: Tensor) -> Tensor:  # (B, N, C) -> (B, H, N, d)
        return x.view(b, -1, self.num_heads, self.head_dim).transpose(1, 2)

    q = heads(self.q_proj(hidden_states) * self.scale)
    k, v = heads(self.k_proj(hidden_states)), heads(self.v_proj(hidden_states))
    attn = self.matmul1(q, k.transpose(-1, -2))  # (B, H, N, N)
    if causal_attention_mask is not None:
        attn = attn + causal_attention_mask
    if attention_mask is not None:
        attn = attn + attention_mask
    attn = nn.functional.softmax(attn, dim=-1)
    probs = nn.functional.dropout(attn, p=self.dropout, training=self.training)
    out = self.matmul2(probs, v).transpose(1, 2).reshape(b, n, c)
    return self.out_proj(out), (attn if output_attentions else None)


@register_attention_adapter(CLIPAttention)
class MatMulCLIPAttention(CLIPAttention):
    """``CLIPAttention`` with explicit products; same outputs as
    transformers 4.51.3 ``models/clip/modeling_clip.py``
    ``CLIPAttention.forward`` (causal + padding masks, added in that
    order)."""

    def forward(self,
                hidden_states: Tensor,
                attention_mask: Optional[Tensor] = None,
                causal_attention_mask: Optional[Tensor] = None,
                output_attentions: Optional[bool] = False) -> Tuple:
        """See :func:`_clip_forward`."""
        return _clip_forward(self, hidden_states, attention_mask,
                             causal_attention_mask, bool(output_attentions))


@register_attention_adapter(CLIPSdpaAttention)
class MatMulCLIPSdpaAttention(CLIPSdpaAttention):
    """``CLIPSdpaAttention`` with explicit products; same outputs as
    transformers 4.51.3 ``CLIPSdpaAttention.forward`` (which returns no
    attention weights unless ``output_attentions``, then falls back to the
    eager forward)."""

    def forward(self,
                hidden_states: Tensor,
                attention_mask: Optional[Tensor] = None,
                causal_attention_mask: Optional[Tensor] = None,
                output_attentions: Optional[bool] = False) -> Tuple:
        """See :func:`_clip_forward`."""
        return _clip_forward(self, hidden_states, attention_mask,
                             causal_attention_mask, bool(output_attentions))
