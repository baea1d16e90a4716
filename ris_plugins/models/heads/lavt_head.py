"""LAVT's simple top-down decoder as an mmseg decode head."""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from torch import Tensor

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from ..utils.checkpoint import maybe_checkpoint


@MODELS.register_module()
class LAVTHead(BaseDecodeHead):
    """LAVT ``SimpleDecoding``: top-down fusion of the four PWAM outputs.

    ``Y = F_4``; for ``F_3, F_2, F_1``: ``Y = [conv3x3-BN-ReLU] x 2 (cat[up(Y),
    F_i])`` with bilinear ``align_corners=True`` upsampling and
    ``channels`` (512 for Swin-B) outputs; then ``conv_seg`` (1x1 -> 2
    classes) at stride 4. Source: ``yz93/LAVT-RIS``
    ``lib/mask_predictor.py``; input widths 1024+512, 512+256, 512+128 for
    Swin-B.

    Args:
        in_channels (Sequence[int]): Widths of F_1..F_4, e.g.
            ``[128, 256, 512, 1024]``.
        channels (int): Hidden width (LAVT: ``C_4 // 2`` = 512).
        with_cp (bool): Activation checkpointing of each of the three
            fusion levels (upsampling, concatenation and the two
            conv-BN-ReLU): their activations (at 480², batch 2, about
            0.5 GB in float32, most of it at stride 4) are recomputed in
            backward instead of kept. Outputs and gradients are the same;
            the BatchNorms' running statistics are restored after the
            recomputation, so they are updated once per step as without
            it. Off without autograd (``torch.no_grad``). Default False.
        **kwargs: :class:`mmseg.models.decode_heads.BaseDecodeHead`
            arguments (``num_classes=2``, ``loss_decode``, ...). Defaults
            to ``in_index=(0, 1, 2, 3)``, ``input_transform='multiple_select'``,
            ``align_corners=True``, ``dropout_ratio=0``, BN.

    Raises:
        ValueError: ``in_channels`` does not have 4 entries.
    """

    def __init__(self, in_channels: Sequence[int], channels: int,
                 with_cp: bool = False, **kwargs) -> None:
        if len(in_channels) != 4:
            raise ValueError(f'LAVTHead needs 4 input widths, got '
                             f'{list(in_channels)}')
        kwargs.setdefault('in_index', (0, 1, 2, 3))
        kwargs.setdefault('input_transform', 'multiple_select')
        kwargs.setdefault('align_corners', True)
        kwargs.setdefault('dropout_ratio', 0.0)
        kwargs.setdefault('norm_cfg', dict(type='BN'))
        super().__init__(list(in_channels), channels, **kwargs)
        self.with_cp = with_cp
        skips = list(in_channels[:3])[::-1]  # F_3, F_2, F_1 widths
        tops = [in_channels[3]] + [channels] * 2
        self.fuse = nn.ModuleList(
            nn.Sequential(
                ConvModule(top + skip, channels, 3, padding=1, bias=False,
                           norm_cfg=self.norm_cfg),
                ConvModule(channels, channels, 3, padding=1, bias=False,
                           norm_cfg=self.norm_cfg))
            for top, skip in zip(tops, skips))

    def forward(self, inputs: Tuple[Tensor, ...]) -> Tensor:
        """(F_1..F_4), F_i (B, C_i, H/2^(i+1), W/2^(i+1)) -> logits
        (B, num_classes, H/4, W/4)."""
        feats: List[Tensor] = self._transform_inputs(inputs)
        y = feats[3]  # (B, C_4, H/32, W/32)
        for skip, fuse in zip(feats[2::-1], self.fuse):
            y = maybe_checkpoint(
                self._fuse_level, y, skip, fuse, enabled=self.with_cp,
                params=fuse.parameters(),
                norm_module=fuse)  # (B, channels, h, w)
        return self.cls_seg(y)

    def _fuse_level(self, y: Tensor, skip: Tensor,
                    fuse: nn.Module) -> Tensor:
        """One top-down step: y (B, C, h', w') upsampled to skip's size,
        concatenated with skip (B, C_i, h, w) and fused -> (B, channels,
        h, w)."""
        if y.shape[-2:] != skip.shape[-2:]:
            y = resize(y, size=skip.shape[-2:], mode='bilinear',
                       align_corners=self.align_corners)
        return fuse(torch.cat([y, skip], dim=1))
