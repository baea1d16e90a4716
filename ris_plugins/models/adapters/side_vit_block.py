"""The blocks of BarLeRIa's GST side ViT: a pre-norm ViT block whose
attention can add top-down values, the feedback decoder and the additive
CLIP fusion (``NastrondAd/BarLeRIa: model/absvit.py`` ``Attention``,
``Block``, ``Decode_Block``; ``model/layers.py`` ``AddFusion``)."""
from typing import Optional, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.drop import DropPath
from mmcv.cnn.bricks.transformer import FFN
from mmengine.model.weight_init import caffe2_xavier_init
from mmpretrain.models.utils import LayerNorm2d
from torch import Tensor


class TopDownAttention(nn.Module):
    """Multi-head self-attention whose values can receive a top-down
    signal: ``v = W_v x + b_v + (W_v td + b_v)`` (AbSViT, Shi et al. CVPR
    2023, eq. 4; ``model/absvit.py`` ``Attention`` adds ``qkv(td)[v]``).

    Args:
        dim (int): Token width C; must be divisible by ``num_heads``.
        num_heads (int): Number of heads.
        qkv_bias (bool): Bias in the fused qkv projection. Defaults to True.

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f'width {dim} is not divisible by num_heads '
                             f'{num_heads}')
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads,
                         c // self.num_heads).transpose(1, 2)  # (B, h, N, C/h)

    def forward(self,
                x: Tensor,
                td: Optional[Tensor] = None,
                key_mask: Optional[Tensor] = None) -> Tensor:
        """Args:
            x (Tensor): (B, N, C) normalised tokens.
            td (Tensor, optional): (B, N, C) top-down signal; its value
                projection is added to the values.
            key_mask (Tensor, optional): (B, N) bool, True = this token is
                not attended to (as a key).

        Returns:
            Tensor: (B, N, C).
        """
        b, n, c = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)  # 3 x (B, N, C)
        if td is not None:
            w_v, b_v = self.qkv.weight[2 * c:], None
            if self.qkv.bias is not None:
                b_v = self.qkv.bias[2 * c:]
            v = v + F.linear(td, w_v, b_v)  # (B, N, C)
        mask = None
        if key_mask is not None:
            mask = ~key_mask[:, None, None, :]  # (B, 1, 1, N) True = attend
        out = F.scaled_dot_product_attention(
            self._heads(q), self._heads(k), self._heads(v),
            attn_mask=mask)  # (B, h, N, C/h)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class SideViTBlock(nn.Module):
    """Pre-norm ViT block with a top-down value input::

        x = x + DropPath(Attn(LN1(x), td))
        x = x + DropPath(MLP(LN2(x)))          MLP = Linear-GELU-Linear

    Source: ``model/absvit.py`` ``Block`` (timm ViT block, LayerNorm eps
    1e-6, no layer scale). Parameters: ``12 C^2 + 13 C`` for mlp_ratio 4
    (250,704 at C = 144).

    Args:
        dim (int): Token width C.
        num_heads (int): Attention heads.
        mlp_ratio (float): Hidden width of the MLP / C. Defaults to 4.
        qkv_bias (bool): Defaults to True.
        drop_path (float): Stochastic-depth rate. Defaults to 0
            (BarLeRIa's ``DROP_PATH_RATE``).
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = True,
                 drop_path: float = 0.):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = TopDownAttention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn = FFN(
            embed_dims=dim,
            feedforward_channels=int(dim * mlp_ratio),
            act_cfg=dict(type='GELU'),
            add_identity=True)
        self.drop_path = DropPath(drop_path) if drop_path > 0 \
            else nn.Identity()

    def forward(self,
                x: Tensor,
                td: Optional[Tensor] = None,
                key_mask: Optional[Tensor] = None) -> Tensor:
        """(B, N, C) -> (B, N, C); ``td`` (B, N, C) and ``key_mask`` (B, N)
        as in :class:`TopDownAttention`."""
        x = x + self.drop_path(self.attn(self.norm1(x), td, key_mask))
        return self.ffn(self.norm2(x), identity=x)  # x + MLP(LN2(x))


class FeedbackDecoder(nn.Module):
    """One AbSViT feedback step: ``h = A x``, ``td = B h`` with A, B
    bias-free C x C maps (``model/absvit.py`` ``Decode_Block``). The
    feedback pass chains ``h`` from the last block to the first; ``td``
    feeds the block's values in the second pass; ``h`` alone is the
    reconstruction used by the variational loss."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim, bias=False)
        self.linear2 = nn.Linear(dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """(..., C) -> (h (..., C), td (..., C))."""
        h = self.linear(x)
        return h, self.linear2(h)


class AddFusion(nn.Module):
    """Adds a projected CLIP feature map to the side net's patch tokens:
    ``patches += resize(Conv1x1(LayerNorm2d(clip)))`` (bilinear,
    align_corners=False, only when the grids differ). The conv uses
    Caffe2 Xavier init (``model/layers.py`` ``AddFusion``).

    Args:
        in_channels (int): CLIP width (768 for ViT-B/16).
        out_channels (int): Side width.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = LayerNorm2d(in_channels, eps=1e-6)
        self.proj = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        caffe2_xavier_init(self.proj)

    def forward(self, patches: Tensor, clip_feat: Tensor,
                hw: Tuple[int, int]) -> Tensor:
        """Args:
            patches (Tensor): (B, h*w, C_side).
            clip_feat (Tensor): (B, C_clip, H, W).
            hw (tuple): (h, w) of the side grid.

        Returns:
            Tensor: (B, h*w, C_side).
        """
        y = self.proj(self.norm(clip_feat))  # (B, C_side, H, W)
        if tuple(y.shape[-2:]) != tuple(hw):
            y = F.interpolate(
                y, size=hw, mode='bilinear',
                align_corners=False)  # (B, C_side, h, w)
        return patches + y.flatten(2).transpose(1, 2)  # (B, h*w, C_side)
