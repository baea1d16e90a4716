"""Adapters for transformers' ``BertSelfAttention`` (eager) and
``BertSdpaSelfAttention`` (the default on CPU in transformers 4.51)."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from transformers.models.bert.modeling_bert import (BertSdpaSelfAttention,
                                                    BertSelfAttention)

from .registry import register_attention_adapter


def _relative_scores(self, q: Tensor, k: Tensor, use_cache: bool) -> Tensor:
    """The ``relative_key(_query)`` terms of eager BERT, (B, H, N, M)."""
    n, m = q.shape[2], k.shape[2]
    left = (
        torch.full((1, 1), m - 1) if use_cache else torch.arange(n)[:, None])
    dist = left.to(q.device) - torch.arange(m, device=q.device)[None]
    pos = self.distance_embedding(dist + self.max_position_embeddings - 1)
    pos = pos.to(q.dtype)  # (N, M, d)
    scores = torch.einsum('bhld,lrd->bhlr', q, pos)
    if self.position_embedding_type == 'relative_key_query':
        scores = scores + torch.einsum('bhrd,lrd->bhlr', k, pos)
    return scores


def _bert_attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor],
                 head_mask: Optional[Tensor],
                 use_cache: bool) -> Tuple[Tensor, Tensor]:
    """Eager BERT attention with explicit products: ``scores =
    matmul1(q, kᵀ) [+ rel] / sqrt(d) [+ mask]`` (the scale comes AFTER
    the product, as upstream); returns (context (B, N, C), probs
    (B, H, N, M))."""
    scores = self.matmul1(q, k.transpose(-1, -2))  # (B, H, N, M)
    if self.position_embedding_type in ('relative_key', 'relative_key_query'):
        scores = scores + _relative_scores(self, q, k, use_cache)
    scores = scores / math.sqrt(self.attention_head_size)
    if mask is not None:
        scores = scores + mask  # additive, broadcast to (B, H, N, M)
    probs = self.dropout(nn.functional.softmax(scores, dim=-1))
    if head_mask is not None:
        probs = probs * head_mask
    ctx = self.matmul2(probs, v).permute(0, 2, 1, 3)  # (B, N, H, d)
    return ctx.reshape(ctx.shape[:2] + (self.all_head_size, )), probs


@register_attention_adapter(BertSelfAttention)
class MatMulBertSelfAttention(BertSelfAttention):
    """``BertSelfAttention`` with explicit products; same computation and
    outputs as transformers 4.51.3 ``models/bert/modeling_bert.py``
    ``BertSelfAttention.forward`` (cross-attention, cache, relative
    positions, head mask included)."""

    def forward(self,
                hidden_states: Tensor,
                attention_mask: Optional[Tensor] = None,
                head_mask: Optional[Tensor] = None,
                encoder_hidden_states: Optional[Tensor] = None,
                encoder_attention_mask: Optional[Tensor] = None,
                past_key_value: Optional[Tuple[Tensor, Tensor]] = None,
                output_attentions: Optional[bool] = False) -> Tuple:
        """hidden_states (B, N, C); attention_mask additive, broadcastable
        to (B, H, N, M). Returns ``(context (B, N, C), [probs], [kv])``."""
        cross = encoder_hidden_states is not None
        shape = self.transpose_for_scores  # (B, L, C) -> (B, H, L, d)
        if cross and past_key_value is not None:
            k, v = past_key_value
            attention_mask = encoder_attention_mask
        elif cross:
            k = shape(self.key(encoder_hidden_states))
            v = shape(self.value(encoder_hidden_states))
            attention_mask = encoder_attention_mask
        else:
            k = shape(self.key(hidden_states))
            v = shape(self.value(hidden_states))
            if past_key_value is not None:
                k = torch.cat([past_key_value[0], k], dim=2)
                v = torch.cat([past_key_value[1], v], dim=2)
        q = shape(self.query(hidden_states))
        ctx, probs = _bert_attend(self, q, k, v, attention_mask, head_mask,
                                  past_key_value is not None)
        outputs = (ctx, probs) if output_attentions else (ctx, )
        return outputs + ((k, v), ) if self.is_decoder else outputs


@register_attention_adapter(BertSdpaSelfAttention)
class MatMulBertSdpaSelfAttention(BertSdpaSelfAttention):
    """``BertSdpaSelfAttention`` with explicit products; same outputs as
    transformers 4.51.3 ``BertSdpaSelfAttention.forward``, which falls back
    to the eager forward for relative positions, ``output_attentions`` or
    ``head_mask``, and otherwise takes the SDPA mask (4-D additive or None;
    causal when a decoder gets no mask)."""

    def forward(self,
                hidden_states: Tensor,
                attention_mask: Optional[Tensor] = None,
                head_mask: Optional[Tensor] = None,
                encoder_hidden_states: Optional[Tensor] = None,
                encoder_attention_mask: Optional[Tensor] = None,
                past_key_value: Optional[Tuple[Tensor, Tensor]] = None,
                output_attentions: Optional[bool] = False) -> Tuple:
        """As :meth:`MatMulBertSelfAttention.forward`."""
        if (self.position_embedding_type != 'absolute' or output_attentions
                or head_mask is not None):
            return MatMulBertSelfAttention.forward(self, hidden_states,
                                                   attention_mask, head_mask,
                                                   encoder_hidden_states,
                                                   encoder_attention_mask,
                                                   past_key_value,
                                                   output_attentions)
        cross = encoder_hidden_states is not None
        current = encoder_hidden_states if cross else hidden_states
        mask = encoder_attention_mask if cross else attention_mask
        shape = self.transpose_for_scores  # (B, L, C) -> (B, H, L, d)
        if (cross and past_key_value
                and past_key_value[0].shape[2] == current.shape[1]):
            k, v = past_key_value
        else:
            k, v = shape(self.key(current)), shape(self.value(current))
            if past_key_value is not None and not cross:
                k = torch.cat([past_key_value[0], k], dim=2)
                v = torch.cat([past_key_value[1], v], dim=2)
        q = shape(self.query(hidden_states))  # (B, H, N, d)
        n = q.shape[2]
        if self.is_decoder and not cross and mask is None and n > 1:
            # SDPA is_causal: top-left aligned lower-triangular mask.
            keep = torch.ones(
                n, k.shape[2], dtype=torch.bool, device=q.device).tril()
            mask = torch.zeros(
                keep.shape, dtype=q.dtype,
                device=q.device).masked_fill(~keep, -math.inf)
        if mask is not None and mask.dtype == torch.bool:
            mask = torch.zeros(
                mask.shape, dtype=q.dtype,
                device=q.device).masked_fill(~mask, -math.inf)
        ctx, _ = _bert_attend(self, q, k, v, mask, None, False)
        return (ctx, (k, v)) if self.is_decoder else (ctx, )
