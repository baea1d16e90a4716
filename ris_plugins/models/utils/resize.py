"""Resampling shared by fusion modules and necks."""
from typing import Tuple

import torch.nn.functional as F
from torch import Tensor


def resize_to(x: Tensor, size: Tuple[int, int],
              align_corners: bool = False) -> Tensor:
    """Resize (B, C, h, w) to ``size`` (H, W): unchanged when equal,
    adaptive average pooling when both sides shrink, bilinear otherwise."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)  # (B, C, H, W)
    return F.interpolate(x, size=size, mode='bilinear',
                         align_corners=align_corners)  # (B, C, H, W)
