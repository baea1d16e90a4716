"""Adapter for ``torch.nn.MultiheadAttention``."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .registry import register_attention_adapter


def additive_mask(mask: Optional[Tensor],
                  dtype: torch.dtype) -> Optional[Tensor]:
    """Bool mask (True = masked out, torch MHA convention) -> float with
    -inf there; float masks are returned as they are (already additive)."""
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros(
        mask.shape, dtype=dtype,
        device=mask.device).masked_fill(mask, float('-inf'))


@register_attention_adapter(nn.MultiheadAttention)
class MatMulTorchMultiheadAttention(nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with explicit products and ``out_proj``
    called as a module (torch calls ``F.linear`` on its weight). Same
    outputs as torch 2.x ``F.multi_head_attention_forward``: packed or
    separate q/k/v weights, ``batch_first``, unbatched inputs,
    ``bias_k``/``bias_v``, ``add_zero_attn``, bool or float
    ``key_padding_mask`` / ``attn_mask`` (2-D (N, M) or 3-D (B*H, N, M)),
    attention dropout in training. ``is_causal`` is only a hint that
    ``attn_mask`` is causal (torch's contract); ``attn_mask`` is used.

    Note: ``nn.TransformerEncoderLayer``'s fused inference fast path reads
    ``in_proj_weight`` directly and bypasses this forward.
    """

    def _project(self, query: Tensor, key: Tensor,
                 value: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(L, B, E_q/k/v) inputs -> q (N, B, E), k and v (M, B, E)."""
        if self._qkv_same_embed_dim:
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        else:
            w_q, w_k, w_v = (self.q_proj_weight, self.k_proj_weight,
                             self.v_proj_weight)
        b_q = b_k = b_v = None
        if self.in_proj_bias is not None:
            b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        return (F.linear(query, w_q,
                         b_q), F.linear(key, w_k,
                                        b_k), F.linear(value, w_v, b_v))

    def forward(self,
                query: Tensor,
                key: Tensor,
                value: Tensor,
                key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True,
                attn_mask: Optional[Tensor] = None,
                average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        """Inputs (N, B, E) (``(B, N, E)`` if ``batch_first``) or unbatched
        (N, E); key_padding_mask (B, M), True / -inf = ignore. Returns the
        output like ``query`` and, if ``need_weights``, probabilities
        (B, N, M) averaged over heads or (B, H, N, M).

        Raises:
            RuntimeError: ``is_causal`` without ``attn_mask`` (as torch).
        """
        if is_causal and attn_mask is None:
            raise RuntimeError('nn.MultiheadAttention: is_causal=True needs '
                               'attn_mask (is_causal is only a hint)')
        batched = query.dim() == 3
        if batched and self.batch_first:
            query, key, value = (
                t.transpose(0, 1) for t in (query, key, value))
        if not batched:  # (L, E) -> (L, 1, E)
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        n, b, e = query.shape
        h, d = self.num_heads, e // self.num_heads
        q, k, v = self._project(query, key, value)
        attn_mask = additive_mask(attn_mask, q.dtype)
        key_padding_mask = additive_mask(key_padding_mask, q.dtype)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.repeat(1, b, 1)])
            v = torch.cat([v, self.bias_v.repeat(1, b, 1)])
        q, k, v = (t.reshape(t.shape[0], b, h, d).permute(1, 2, 0, 3)
                   for t in (q, k, v))  # (B, H, L, d)
        if self.add_zero_attn:
            k = torch.cat([k, k.new_zeros(b, h, 1, d)], dim=2)
            v = torch.cat([v, v.new_zeros(b, h, 1, d)], dim=2)
        extra = int(self.bias_k is not None) + int(self.add_zero_attn)
        if extra:  # masks gain columns for bias_k / the zero key
            attn_mask, key_padding_mask = (None if m is None else F.pad(
                m, (0, extra)) for m in (attn_mask, key_padding_mask))
        attn = self.matmul1(q * d**-0.5, k.transpose(-2, -1))  # (B,H,N,M)
        if attn_mask is not None:
            attn = attn + attn_mask.view(-1, h if attn_mask.dim() == 3 else 1,
                                         *attn_mask.shape[-2:])
        if key_padding_mask is not None:
            attn = attn + key_padding_mask.view(b, 1, 1, -1)
        attn = F.dropout(attn.softmax(dim=-1), self.dropout, self.training)
        out = self.matmul2(attn, v).permute(2, 0, 1, 3).reshape(n, b, e)
        out = self.out_proj(out)  # (N, B, E)
        weights = (attn.mean(
            dim=1) if average_attn_weights else attn) if need_weights else None
        if not batched:
            out = out.squeeze(1)
            weights = None if weights is None else weights.squeeze(0)
        elif self.batch_first:
            out = out.transpose(0, 1)
        return out, weights
