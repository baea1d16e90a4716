"""Adapter for mmpretrain's CLIP ResNet attention pooling
``AttentionPool2d`` (chinese_clip). Our ``DenseAttentionPool2d`` (CRIS)
computes through its own ``matmul1`` / ``matmul2`` and needs none."""
import torch
from mmpretrain.models.multimodal.chinese_clip.chinese_clip import \
    AttentionPool2d
from torch import Tensor

from .registry import register_attention_adapter


def pool_attention(self, tokens: Tensor) -> Tensor:
    """Self-attention over tokens (L, B, C_in) with ``q_proj / k_proj /
    v_proj / c_proj`` called as modules (upstream passes their weights to
    ``F.multi_head_attention_forward``, which the quantization engine could
    not see): ``c_proj(matmul2(softmax(matmul1(q * d**-0.5, kᵀ)), v))``.
    Returns (L, B, C_out)."""
    n, b, c = tokens.shape
    h = self.num_heads

    def heads(x: Tensor) -> Tensor:  # (L, B, C) -> (B, H, L, d)
        return x.reshape(n, b, h, -1).permute(1, 2, 0, 3)

    q, k, v = (
        heads(proj(tokens))
        for proj in (self.q_proj, self.k_proj, self.v_proj))
    attn = self.matmul1(q * q.shape[-1]**-0.5, k.transpose(-2, -1))
    out = self.matmul2(attn.softmax(dim=-1), v)  # (B, H, L, d)
    return self.c_proj(out.permute(2, 0, 1, 3).reshape(n, b, -1))


@register_attention_adapter(AttentionPool2d)
class MatMulAttentionPool2d(AttentionPool2d):
    """mmpretrain 1.2.0 ``multimodal/chinese_clip/chinese_clip.py``
    ``AttentionPool2d`` (OpenAI CLIP's) with explicit products: mean token
    + positional embedding, self-attention, the mean token's output."""

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out)."""
        x = x.flatten(2).permute(2, 0, 1)  # (HW, B, C_in)
        x = torch.cat([x.mean(dim=0, keepdim=True), x])  # (HW+1, B, C_in)
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        return pool_attention(self, x)[0]
