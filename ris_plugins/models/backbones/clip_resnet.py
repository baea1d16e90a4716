"""CLIP's modified ResNet with CRIS's dense attention pooling."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.multimodal.chinese_clip.chinese_clip import (
    AttentionPool2d, Bottleneck, ModifiedResNet)
from torch import Tensor

from mmseg.registry import MODELS
from ..utils.checkpoint import run_sequential
from ..utils.matmul import MatMul

# OpenAI CLIP ResNets (``clip/model.py`` ``build_model``): blocks per stage
# and the attention-pool output width (= CLIP's joint embedding width).
CLIP_RESNETS = {
    50: dict(stage_blocks=(3, 4, 6, 3), output_dim=1024),
    101: dict(stage_blocks=(3, 4, 23, 3), output_dim=512),
}


class DenseAttentionPool2d(AttentionPool2d):
    """CLIP's ``AttentionPool2d`` made dense, as in CRIS (``model/clip.py``
    ``AttentionPool2d``).

    Differences from CLIP: no mean-pooled query token (all H x W tokens are
    kept and attend to each other); the S x S grid of the positional
    embedding (row 0, CLIP's pooled-token position, is unused) is resized
    bicubically (``align_corners=False``) to H x W on every forward; a new
    residual ``connect`` branch (1x1 conv without bias + BN on the input)
    is added to the attention output, followed by ReLU::

        y = relu(c_proj(MHSA(x + pos)) + connect(x))

    The MHSA uses CLIP's ``q_proj / k_proj / v_proj / c_proj`` weights
    (32 heads for RN50 / RN101). Its two products can run as the
    :class:`MatMul` children ``matmul1`` (``q d^-1/2 kᵀ``, (B, h, N, N))
    and ``matmul2`` (``softmax(.) v``, (B, h, N, d)), so quantization
    wraps them like any other layer; they have no parameters, so the
    state-dict keys are CRIS's.

    Args:
        spacial_dim (int): S, side of the positional grid (CLIP: 224 / 32 =
            7, so the table has S * S + 1 = 50 rows).
        embed_dim (int): C_in, input width (RN50 / RN101: 2048).
        num_heads (int): Attention heads; must divide ``embed_dim``.
        output_dim (int): C_out (RN50: 1024, RN101: 512).
        use_sdpa (bool): True (default) computes the MHSA with torch's
            fused ``F.multi_head_attention_forward`` as CRIS does, so the
            outputs equal upstream's bit for bit; False computes it with
            ``matmul1`` / explicit softmax / ``matmul2`` (equal up to
            float32 round-off, ~1e-7). ``quantize_model`` turns it off
            while the model is quantized and restores it afterwards.

    Raises:
        ValueError: ``num_heads`` does not divide ``embed_dim``.
    """

    def __init__(self, spacial_dim: int, embed_dim: int, num_heads: int,
                 output_dim: int, use_sdpa: bool = True) -> None:
        if embed_dim % num_heads:
            raise ValueError(f'num_attn_heads={num_heads} must divide the '
                             f'attention-pool width {embed_dim}')
        super().__init__(spacial_dim, embed_dim, num_heads, output_dim)
        self.spacial_dim = spacial_dim
        self.connect = nn.Sequential(
            nn.Conv2d(embed_dim, output_dim, 1, bias=False),
            nn.BatchNorm2d(output_dim))
        self.use_sdpa = use_sdpa
        self.matmul1 = MatMul()
        self.matmul2 = MatMul()

    def resized_pos_embed(self, h: int, w: int) -> Tensor:
        """The grid part of the positional embedding resized to (h, w).

        Returns:
            Tensor: (h * w, C_in), row-major over (h, w).
        """
        s = self.spacial_dim
        grid = self.positional_embedding[1:]  # (S*S, C_in)
        grid = grid.reshape(1, s, s, -1).permute(0, 3, 1, 2)  # (1,C_in,S,S)
        grid = F.interpolate(
            grid, size=(h, w), mode='bicubic',
            align_corners=False)  # (1, C_in, h, w)
        return grid.flatten(2)[0].transpose(0, 1)  # (h*w, C_in)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        b, _, h, w = x.shape
        residual = self.connect(x)  # (B, C_out, H, W)
        tokens = x.flatten(2).permute(2, 0, 1)  # (H*W, B, C_in)
        # int(): an ONNX export then holds the resized table as a constant
        # of the fixed export size, which ONNX Runtime folds at load
        pos = self.resized_pos_embed(int(h), int(w))  # (H*W, C_in)
        tokens = tokens + pos[:, None].to(x.dtype)
        out = (self._fused_attention(tokens) if self.use_sdpa else
               self._attention(tokens))  # (H*W, B, C_out)
        out = out.permute(1, 2, 0).reshape(b, -1, h, w)  # (B, C_out, H, W)
        return F.relu(out + residual)

    def _attention(self, tokens: Tensor) -> Tensor:
        """MHSA with explicit products: ``c_proj(matmul2(softmax(
        matmul1(q d^-1/2, kᵀ)), v))``; tokens (N, B, C_in) -> (N, B,
        C_out)."""
        n, b, _ = tokens.shape

        def heads(x: Tensor) -> Tensor:  # (N, B, C) -> (B, h, N, d)
            return x.reshape(n, b, self.num_heads, -1).permute(1, 2, 0, 3)

        q, k, v = (heads(proj(tokens))
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        attn = self.matmul1(q * q.shape[-1]**-0.5, k.transpose(-2, -1))
        out = self.matmul2(attn.softmax(dim=-1), v)  # (B, h, N, d)
        return self.c_proj(out.permute(2, 0, 1, 3).reshape(n, b, -1))

    def _fused_attention(self, tokens: Tensor) -> Tensor:
        """CRIS's MHSA (``F.multi_head_attention_forward`` with CLIP's
        separate projections); tokens (N, B, C_in) -> (N, B, C_out)."""
        out, _ = F.multi_head_attention_forward(
            query=tokens,
            key=tokens,
            value=tokens,
            embed_dim_to_check=tokens.shape[-1],
            num_heads=self.num_heads,
            in_proj_weight=None,
            in_proj_bias=torch.cat(
                [self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None,
            bias_v=None,
            add_zero_attn=False,
            dropout_p=0.0,
            out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias,
            training=self.training,
            need_weights=False,
            use_separate_proj_weight=True,
            q_proj_weight=self.q_proj.weight,
            k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight)  # (N, B, C_out)
        return out


class _StageTable(dict):
    """``ModifiedResNet.arch_settings`` that also accepts a tuple of
    blocks per stage as the ``depth`` key (small test networks)."""

    def __missing__(self, key):
        if isinstance(key, tuple):
            return (Bottleneck, key)
        raise KeyError(key)


@MODELS.register_module()
class CLIPResNet(ModifiedResNet):
    """CLIP's ModifiedResNet (mmpretrain's, OpenAI's module names) with
    CRIS's dense attention pool, returning three levels.

    Outputs ``(layer2, layer3, attnpool(layer4))`` at strides 8 / 16 / 32
    with widths ``(8w, 16w, output_dim)`` for base width w: RN50 at 416 x
    416 gives (B, 512, 52, 52), (B, 1024, 26, 26), (B, 1024, 13, 13);
    RN101 the same with 512 channels at stride 32. Source: CRIS
    ``model/clip.py`` ``ModifiedResNet.forward`` and ``AttentionPool2d``;
    see :class:`DenseAttentionPool2d`. The stem, Bottlenecks and parameter
    names come from ``mmpretrain.models.multimodal.chinese_clip``, so
    OpenAI ``visual.*`` keys map one-to-one onto ours
    (``tools/model_converters/clip_to_ris.py``).

    Args:
        depth (int): 50 or 101 (OpenAI RN50 / RN101).
        base_channels (int): w, the stem / layer1 width (OpenAI: 64).
        input_size (int): Pretraining resolution that sizes the positional
            table: (input_size / 32)^2 + 1 rows (OpenAI RN50 / RN101: 224).
            Any input resolution works, the table is resized every forward.
        num_attn_heads (int): Heads of the attention pool (OpenAI: w * 32 /
            64 = 32).
        output_dim (int, optional): Attention-pool output width; default
            OpenAI's for ``depth`` (RN50 1024, RN101 512).
        stage_blocks (Sequence[int], optional): Override the Bottleneck
            count of each of the 4 stages (tiny test networks).
        with_cp (bool): Activation checkpointing of every Bottleneck
            (recomputed in backward): same outputs and gradients, less
            memory, more compute.
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained',
            checkpoint=<converted>, prefix='backbone.')``.

    Raises:
        ValueError: Unknown ``depth`` (without ``stage_blocks``), a
            ``stage_blocks`` that is not 4 positive counts, or heads that
            do not divide the pool width.
    """

    arch_settings = _StageTable({
        d: (Bottleneck, v['stage_blocks'])
        for d, v in CLIP_RESNETS.items()
    })

    def __init__(self,
                 depth: int = 50,
                 base_channels: int = 64,
                 input_size: int = 224,
                 num_attn_heads: int = 32,
                 output_dim: Optional[int] = None,
                 stage_blocks: Optional[Sequence[int]] = None,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        arch = self._arch_key(depth, stage_blocks)
        if output_dim is None:
            if depth not in CLIP_RESNETS:
                raise ValueError(f'output_dim is required for depth={depth}')
            output_dim = CLIP_RESNETS[depth]['output_dim']
        super().__init__(
            depth=arch,
            base_channels=base_channels,
            input_size=input_size,
            num_attn_heads=num_attn_heads,
            output_dim=output_dim,
            init_cfg=init_cfg)
        # Replace CLIP's pooling (same parameter names, plus `connect`).
        spacial = input_size // 32
        self.attnpool = DenseAttentionPool2d(spacial, base_channels * 32,
                                             num_attn_heads, output_dim)
        self.out_channels = (base_channels * 8, base_channels * 16,
                             output_dim)
        self.with_cp = with_cp

    @staticmethod
    def _arch_key(depth: int, stage_blocks: Optional[Sequence[int]]):
        if stage_blocks is not None:
            blocks = tuple(int(n) for n in stage_blocks)
            if len(blocks) != 4 or min(blocks) < 1:
                raise ValueError(f'stage_blocks must be 4 positive counts, '
                                 f'got {list(stage_blocks)}')
            return blocks
        if depth not in CLIP_RESNETS:
            raise ValueError(f'unsupported CLIPResNet depth={depth}; valid: '
                             f'{sorted(CLIP_RESNETS)} (or give stage_blocks)')
        return depth

    def init_weights(self) -> None:
        """OpenAI's initialisation of the attention pool (normal, std
        C_in^-0.5) and zero-init of each Bottleneck's last BN weight, unless
        ``init_cfg`` loads a checkpoint."""
        if self.init_cfg is not None:
            super().init_weights()
            return
        std = self.attnpool.c_proj.in_features**-0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj,
                     self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        for name, param in self.named_parameters():
            if name.startswith('layer') and name.endswith('bn3.weight'):
                nn.init.zeros_(param)
        self._is_init = True

    def run_stage(self, stage: nn.Sequential, x: Tensor) -> Tensor:
        """``stage(x)``, each Bottleneck checkpointed when ``with_cp``
        (mmpretrain ResNet's ``with_cp``; CLIP's Bottleneck has none)."""
        return run_sequential(stage, x, self.with_cp)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Images (B, 3, H, W) -> (B, 8w, H/8, W/8), (B, 16w, H/16, W/16),
        (B, output_dim, H/32, W/32)."""
        x = x.type(self.conv1.weight.dtype)
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2),
                         (self.conv3, self.bn3)):
            x = self.relu(bn(conv(x)))  # stem: (B, w, H/2, W/2)
        x = self.avgpool(x)  # (B, w, H/4, W/4)
        x = self.run_stage(self.layer1, x)  # (B, 4w, H/4, W/4)
        c3 = self.run_stage(self.layer2, x)  # (B, 8w, H/8, W/8)
        c4 = self.run_stage(self.layer3, c3)  # (B, 16w, H/16, W/16)
        c5 = self.attnpool(self.run_stage(self.layer4,
                                          c4))  # (B, output_dim, H/32, W/32)
        return c3, c4, c5
