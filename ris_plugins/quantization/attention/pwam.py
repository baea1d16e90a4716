"""Adapter for LAVT's pixel-word attention (our ``PixelWordAttention``)."""
import torch
from torch import Tensor

from ris_plugins.models.fusion.pwam import PixelWordAttention
from .registry import register_attention_adapter


@register_attention_adapter(PixelWordAttention)
class MatMulPixelWordAttention(PixelWordAttention):
    """``PixelWordAttention`` with explicit products; same computation as
    ``ris_plugins/models/fusion/pwam.py`` (upstream LAVT
    ``SpatialImageLanguageAttention``): ``S = softmax(matmul1(Q_h, K_h) *
    C**-0.5 + 1e4 (m - 1))`` (scale AFTER the product, full C as
    upstream), ``matmul2(S, U_hᵀ)``."""

    def forward(self, x: Tensor, words: Tensor, mask: Tensor) -> Tensor:
        """x (B, N, C); words (B, C_t, L); mask (B, 1, L) float, 1 = word.
        Returns (B, N, C)."""
        b, n, c = x.shape
        h = self.num_heads
        query = self.f_query(x.transpose(1, 2)).transpose(1, 2)  # (B, N, C)
        key = self.f_key(words) * mask  # (B, C, L)
        value = self.f_value(words) * mask  # (B, C, L)
        query = query.reshape(b, n, h, c // h).transpose(1, 2)  # (B,h,N,d)
        key = key.reshape(b, h, c // h, -1)  # (B, h, d, L): already kᵀ
        value = value.reshape(b, h, c // h, -1).transpose(2, 3)  # (B,h,L,d)
        sim = self.matmul1(query, key) * c**-0.5  # (B, h, N, L)
        sim = sim + (1e4 * mask.unsqueeze(1) - 1e4)
        attn = torch.softmax(sim, dim=-1)  # (B, h, N, L)
        out = self.matmul2(attn, value)  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.W(out.transpose(1, 2)).transpose(1, 2)  # (B, N, C)
