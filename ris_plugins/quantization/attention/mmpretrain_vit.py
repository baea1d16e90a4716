"""Adapters for mmpretrain's ViT ``MultiheadAttention`` and ViTSAM's
``Attention``."""
from functools import partial

import torch.nn.functional as F
from mmpretrain.models.backbones.vit_sam import (Attention,
                                                 add_decomposed_rel_pos)
from mmpretrain.models.utils.attention import MultiheadAttention
from torch import Tensor

from .registry import register_attention_adapter


@register_attention_adapter(MultiheadAttention)
class MatMulMultiheadAttention(MultiheadAttention):
    """mmpretrain ``MultiheadAttention`` (VisionTransformer, our CLIPViT)
    with explicit products. Same as mmpretrain 1.2.0
    ``models/utils/attention.py`` ``MultiheadAttention.forward``.

    Upstream quirk kept: with ``qk_scale`` set, mmpretrain uses its
    ``scaled_dot_product_attention_pyimpl(scale=d**-0.5)``, which DIVIDES
    by ``scale``, i.e. logits are ``q kᵀ * sqrt(d)`` (``qk_scale``'s value
    is ignored). Then ``matmul1(q, kᵀ) / scale``; otherwise
    ``matmul1(q * d**-0.5, kᵀ)`` as SDPA's default.
    """

    def forward(self, x: Tensor) -> Tensor:
        """x (B, N, C_in) -> (B, N, C)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads,
                                  self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, H, N, d)
        sdpa = self.scaled_dot_product_attention
        if isinstance(sdpa, partial):  # pyimpl: q kᵀ / scale
            scale = sdpa.keywords.get('scale') or q.size(-1)**0.5
            attn = self.matmul1(q, k.transpose(-2, -1)) / scale
        else:
            attn = self.matmul1(q * q.size(-1)**-0.5, k.transpose(-2, -1))
        attn = attn.softmax(dim=-1)  # (B, H, N, N)
        attn = F.dropout(attn, self.attn_drop, self.training)
        x = self.matmul2(attn,
                         v).transpose(1,
                                      2).reshape(b, n,
                                                 self.embed_dims)  # (B, N, C)
        x = self.out_drop(self.gamma1(self.proj_drop(self.proj(x))))
        if self.v_shortcut:
            x = v.squeeze(1) + x
        return x


@register_attention_adapter(Attention)
class MatMulSAMAttention(Attention):
    """ViTSAM's ``Attention`` (mmpretrain 1.2.0 ``backbones/vit_sam.py``,
    from segment-anything) with explicit products; the optional decomposed
    relative position term is added after ``matmul1`` as upstream."""

    def forward(self, x: Tensor) -> Tensor:
        """x (B, H, W, C) -> (B, H, W, C)."""
        b, hh, ww, _ = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(b, hh * ww, 3, nh, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, nH, HW, d)
        attn = self.matmul1(q * self.scale, k.transpose(-2, -1))  # (B,nH,N,N)
        if self.use_rel_pos:
            attn = add_decomposed_rel_pos(
                attn.flatten(0, 1), q.flatten(0, 1), self.rel_pos_h,
                self.rel_pos_w, (hh, ww), (hh, ww)).view_as(attn)
        attn = attn.softmax(dim=-1)
        x = self.matmul2(attn, v)  # (B, nH, HW, d)
        x = x.view(b, nh, hh, ww, -1).permute(0, 2, 3, 1,
                                              4).reshape(b, hh, ww,
                                                         -1)  # (B, H, W, C)
        return self.proj(x)
