"""LAVT's Pixel-Word Attention Module (PWAM) and language gate.

Source: Yang et al., "LAVT: Language-Aware Vision Transformer for Referring
Image Segmentation", CVPR 2022, Sec. 3.2 (Eq. 1-6); upstream
``yz93/LAVT-RIS`` ``lib/backbone.py`` (``PWAM``,
``SpatialImageLanguageAttention``, ``MMBasicLayer.res_gate``). Parameter
names follow the upstream modules so checkpoints convert one to one.
"""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import TextFeatures
from ..utils.matmul import MatMul


class PixelWordAttention(nn.Module):
    """Each pixel attends over the words (upstream
    ``SpatialImageLanguageAttention``).

    ``Q = IN(W_q x)`` (B, N, C); ``K = W_k w * m``, ``U = W_v w * m``
    (B, C, L); ``S = softmax_L(C^-1/2 Q_h K_h + 1e4 (m - 1))`` per head h
    (the scale uses the full C, as upstream); output ``IN(W_o [S_h
    U_h^T]_h)`` (B, N, C). The two products are the :class:`MatMul`
    children ``matmul1`` (``Q_h K_h``) and ``matmul2`` (``S_h U_h^T``), so
    quantization wraps them like any other layer (no parameters: the
    state-dict keys are upstream's).

    Args:
        channels (int): C.
        text_channels (int): C_t.
        num_heads (int): h.
        use_sdpa (bool): Compute ``[S_h U_h^T]_h`` with
            ``F.scaled_dot_product_attention`` (same scale and additive
            mask) instead of the two explicit ``torch.matmul`` (default,
            upstream's form, traced as plain MatMul/Softmax by ONNX).
            ``quantize_model`` turns it off while the model is quantized
            (the quantized products are ``matmul1`` / ``matmul2``) and
            restores it with the FP model.
    """

    def __init__(self, channels: int, text_channels: int,
                 num_heads: int, use_sdpa: bool = False) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f'PWAM channels {channels} must be divisible '
                             f'by num_heads {num_heads}')
        self.num_heads = num_heads
        self.use_sdpa = use_sdpa
        self.f_query = nn.Sequential(
            nn.Conv1d(channels, channels, 1), nn.InstanceNorm1d(channels))
        self.f_key = nn.Sequential(nn.Conv1d(text_channels, channels, 1))
        self.f_value = nn.Sequential(nn.Conv1d(text_channels, channels, 1))
        self.W = nn.Sequential(
            nn.Conv1d(channels, channels, 1), nn.InstanceNorm1d(channels))
        self.matmul1 = MatMul()
        self.matmul2 = MatMul()

    def forward(self, x: Tensor, words: Tensor, mask: Tensor) -> Tensor:
        """x (B, N, C); words (B, C_t, L); mask (B, 1, L) float, 1 = word.
        Returns (B, N, C)."""
        b, n, c = x.shape
        h = self.num_heads
        query = self.f_query(x.transpose(1, 2)).transpose(1, 2)  # (B, N, C)
        key = self.f_key(words) * mask  # (B, C, L)
        value = self.f_value(words) * mask  # (B, C, L)
        query = query.reshape(b, n, h, c // h).transpose(1, 2)  # (B,h,N,C/h)
        key = key.reshape(b, h, c // h, -1)  # (B, h, C/h, L)
        value = value.reshape(b, h, c // h, -1)  # (B, h, C/h, L)
        if self.use_sdpa:
            out = self._sdpa(query, key, value, mask)  # (B, h, N, C/h)
            out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
            return self.W(out.transpose(1, 2)).transpose(1, 2)
        sim = self.matmul1(query, key) * c**-0.5  # (B, h, N, L)
        sim = sim + (1e4 * mask.unsqueeze(1) - 1e4)
        attn = sim.softmax(dim=-1)  # (B, h, N, L)
        out = self.matmul2(attn, value.transpose(2, 3))  # (B, h, N, C/h)
        out = out.transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        return self.W(out.transpose(1, 2)).transpose(1, 2)  # (B, N, C)

    @staticmethod
    def _sdpa(query: Tensor, key: Tensor, value: Tensor,
              mask: Tensor) -> Tensor:
        """The explicit path's ``softmax(Q K * C^-1/2 + 1e4 (m - 1)) U^T``
        fused: query (B, h, N, d), key / value (B, h, d, L), mask (B, 1, L)
        -> (B, h, N, d)."""
        c = query.shape[1] * query.shape[3]
        dtype = query.dtype if not torch.is_autocast_enabled(
            query.device.type) else torch.get_autocast_dtype(
                query.device.type)
        bias = (1e4 * mask.unsqueeze(1) - 1e4).to(dtype)  # (B, 1, 1, L)
        return F.scaled_dot_product_attention(
            query.to(dtype), key.transpose(2, 3).to(dtype),
            value.transpose(2, 3).to(dtype), attn_mask=bias, scale=c**-0.5)


@MODELS.register_module()
class PWAM(BaseModule):
    """Pixel-Word Attention Module with LAVT's language gate.

    ``V_m = Drop(GELU(W_vis x))``; ``G`` = pixel-word attention;
    ``F = Drop(GELU(W_mm (V_m * G)))`` (the multimodal feature the decoder
    receives); gate ``E = x + tanh(W_2 ReLU(W_1 F)) * F`` (what the next
    Swin stage receives).

    Args:
        channels (int): C, visual channels of the stage.
        text_channels (int): C_t, width of the word features (768 for
            BERT-base).
        num_heads (int): Attention heads (LAVT default 1).
        dropout (float): Dropout after ``vis_project`` and ``project_mm``.
        use_sdpa (bool): See :class:`PixelWordAttention` (default False).

    Raises:
        ValueError: ``channels`` not divisible by ``num_heads``.
    """

    def __init__(self,
                 channels: int,
                 text_channels: int = 768,
                 num_heads: int = 1,
                 dropout: float = 0.0,
                 use_sdpa: bool = False,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.vis_project = nn.Sequential(
            nn.Conv1d(channels, channels, 1), nn.GELU(), nn.Dropout(dropout))
        self.image_lang_att = PixelWordAttention(channels, text_channels,
                                                 num_heads, use_sdpa)
        self.project_mm = nn.Sequential(
            nn.Conv1d(channels, channels, 1), nn.GELU(), nn.Dropout(dropout))
        self.res_gate = nn.Sequential(
            nn.Linear(channels, channels, bias=False), nn.ReLU(),
            nn.Linear(channels, channels, bias=False), nn.Tanh())

    def forward(self, x: Tensor, text: TextFeatures) -> Tuple[Tensor, Tensor]:
        """Fuse one stage.

        Args:
            x (Tensor): (B, N, C) visual tokens, N = H * W.
            text (TextFeatures): word_feats (B, L, C_t), pad_mask (B, L).

        Returns:
            tuple[Tensor, Tensor]: F (B, N, C), the multimodal feature, and
            E (B, N, C), the gated residual update of ``x``.
        """
        words = text.word_feats.transpose(1, 2)  # (B, C_t, L)
        mask = (~text.pad_mask).to(x.dtype).unsqueeze(1)  # (B, 1, L)
        vis = self.vis_project(x.transpose(1, 2))  # (B, C, N)
        lang = self.image_lang_att(x, words, mask).transpose(1, 2)  # (B,C,N)
        fused = self.project_mm(vis * lang).transpose(1, 2)  # (B, N, C)
        return fused, x + self.res_gate(fused) * fused
