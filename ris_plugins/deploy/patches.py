"""Export-time replacements for library code that the TorchScript ONNX
exporter cannot trace generally.

Only used inside :func:`export_patches` while a graph is traced; the
replacements compute the same tensors (pure reshapes; the instance norm to
float32 round-off).
"""
import contextlib
from typing import Iterator

import torch
from mmpretrain.models.utils.attention import ShiftWindowMSA
from torch import Tensor
from torch.nn.modules.instancenorm import _InstanceNorm


def _window_reverse(windows: Tensor, H: int, W: int,
                    window_size: int) -> Tensor:
    """mmpretrain ``ShiftWindowMSA.window_reverse`` (windows
    (B*nW, ws, ws, C) -> (B, H, W, C)) without its
    ``B = int(windows.shape[0] / ...)``, which a traced export turns into
    a constant (the exported Swin then only runs at the example's batch
    size)."""
    c = windows.shape[-1]
    x = windows.view(-1, H // window_size, W // window_size, window_size,
                     window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, c)


_instance_norm_forward = _InstanceNorm.forward


def _instance_norm(self: _InstanceNorm, x: Tensor) -> Tensor:
    """``nn.InstanceNorm1d/2d/3d`` on batch statistics as explicit
    reductions: x (B, C, *S) or (C, *S) normalised over S,
    ``(x - mean) / sqrt(var + eps)`` (biased variance), then the affine
    (C,) weight and bias if any. torch's exporter lowers the library op to
    ONNX ``InstanceNormalization``, which needs the channel count in the
    traced type; a DequantizeLinear input (the QDQ export of LAVT's PWAM
    ``Conv1d -> InstanceNorm1d``) carries no shape, so the export failed
    with "instance_norm for unknown channel size". Modules that use
    running statistics keep the library forward."""
    if self.track_running_stats and not self.training:
        return _instance_norm_forward(self, x)
    spatial = tuple(range(x.dim() - self._get_no_batch_dim() + 1, x.dim()))
    mean = x.mean(spatial, keepdim=True)  # (B, C, 1, ...)
    var = (x - mean).pow(2).mean(spatial, keepdim=True)  # (B, C, 1, ...)
    y = (x - mean) * torch.rsqrt(var + self.eps)
    if self.affine:
        shape = (-1, ) + (1, ) * len(spatial)  # (C, 1, ...)
        y = y * self.weight.view(shape) + self.bias.view(shape)
    return y


@contextlib.contextmanager
def export_patches() -> Iterator[None]:
    """Swap in the export-friendly versions above for the duration of an
    export; the originals are restored on exit (errors included)."""
    original = ShiftWindowMSA.__dict__['window_reverse']
    ShiftWindowMSA.window_reverse = staticmethod(_window_reverse)
    _InstanceNorm.forward = _instance_norm
    try:
        yield
    finally:
        ShiftWindowMSA.window_reverse = original
        _InstanceNorm.forward = _instance_norm_forward
