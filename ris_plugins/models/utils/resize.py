"""Resampling shared by fusion modules and necks."""
from typing import Tuple

import torch.nn.functional as F
from torch import Tensor


def resize_to(x: Tensor, size: Tuple[int, int],
              align_corners: bool = False) -> Tensor:
    """Resize (B, C, h, w) to ``size`` (H, W): unchanged when equal,
    adaptive average pooling when both sides shrink, bilinear otherwise.

    Sizes are taken as plain ints and an integer shrink factor uses
    ``avg_pool2d`` (the same windows as adaptive pooling), so a traced
    export (ONNX) sees constant sizes (H and W are fixed at export)."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h >= size[0] and w >= size[1]:
        if h % size[0] == 0 and w % size[1] == 0:  # same windows, exportable
            return F.avg_pool2d(x, (h // size[0], w // size[1]))
        return F.adaptive_avg_pool2d(x, size)  # (B, C, H, W)
    return F.interpolate(x, size=size, mode='bilinear',
                         align_corners=align_corners)  # (B, C, H, W)
