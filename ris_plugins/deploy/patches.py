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


_get_attn_mask = ShiftWindowMSA.__dict__['get_attn_mask'].__func__


def _get_attn_mask_static(hw_shape, window_size: int, shift_size: int,
                          device=None):
    """mmpretrain ``ShiftWindowMSA.get_attn_mask`` (the shifted-window mask
    (nW, ws*ws, ws*ws), 0 or -100) for the padded feature size as Python
    ints. The library passes ``query.shape[1:3]``, which the tracer records
    as ``Shape`` ops, so the mask (which depends on H and W only, fixed at
    export) was rebuilt at every run from ~80 shape, slice and scatter ops
    per shifted block; with ints every input of the mask is a constant and
    ONNX Runtime folds it once when it loads the file."""
    hw_shape = tuple(int(v) for v in hw_shape)
    return _get_attn_mask(hw_shape, window_size, shift_size, device)


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
    original = {name: ShiftWindowMSA.__dict__[name]
                for name in ('window_reverse', 'get_attn_mask')}
    ShiftWindowMSA.window_reverse = staticmethod(_window_reverse)
    ShiftWindowMSA.get_attn_mask = staticmethod(_get_attn_mask_static)
    _InstanceNorm.forward = _instance_norm
    try:
        yield
    finally:
        for name, fn in original.items():
            setattr(ShiftWindowMSA, name, fn)
        _InstanceNorm.forward = _instance_norm_forward
