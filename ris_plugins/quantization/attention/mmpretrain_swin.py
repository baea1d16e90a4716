"""Adapter for mmpretrain's Swin ``WindowMSA`` (W-MSA and SW-MSA)."""
from typing import Optional

from mmpretrain.models.utils.attention import WindowMSA
from torch import Tensor

from .registry import register_attention_adapter


@register_attention_adapter(WindowMSA)
class MatMulWindowMSA(WindowMSA):
    """``WindowMSA`` with explicit products; same forward as mmpretrain
    1.2.0 ``mmpretrain/models/utils/attention.py`` ``WindowMSA.forward``:
    ``softmax(matmul1(q * scale, kᵀ) + B_rel [+ mask]) -> matmul2(., v)``.
    """

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """x (nW*B, N, C) windows of N = Wh*Ww tokens; mask (nW, N, N),
        values in (-inf, 0] (shifted windows), or None. Returns
        (nW*B, N, C)."""
        b_, n, c = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(b_, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (nW*B, H, N, d)
        attn = self.matmul1(q * self.scale, k.transpose(-2, -1))  # (., H,N,N)
        bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)].view(n, n, -1)  # (N,N,H)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)  # (nW*B, H, N, N)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, h, n, n) + mask[None, :, None]
            attn = attn.view(-1, h, n, n)
        attn = self.attn_drop(self.softmax(attn))  # (nW*B, H, N, N)
        x = self.matmul2(attn, v).transpose(1, 2).reshape(b_, n, c)
        return self.proj_drop(self.proj(x))  # (nW*B, N, C)
