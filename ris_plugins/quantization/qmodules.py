"""Fake-quantized layers: Linear, Conv1d/Conv2d and attention matmuls.

A layer is quantized *in place*: its class is swapped for the quantized
subclass below and quantizer children are attached, so the parameters stay
the same objects and the FP state-dict keys (``<name>.weight``) are
unchanged.  :func:`restore_float` undoes it.  This is eager module swapping
(no FX tracing, no ``torch.ao``), the design of PTQ4ViT's ``quant_layers``
(``hahnyuan/PTQ4ViT: quant_layers/{linear,conv,matmul}.py``) re-expressed
for mmengine models.
"""
from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import wrappers as mmcv_wrappers
from torch import Tensor

from .matmul import MatMul


class _QuantMixin:
    """Shared state of a quantized layer.

    Children ``w_quantizer`` / ``a_quantizer`` (and ``b_quantizer`` for
    matmuls) are quantizer modules or ``None`` (kept FP).
    """

    float_cls: type
    KIND: str  # 'Linear', 'Conv' or 'MatMul'
    QUANTIZER_NAMES = ('w_quantizer', 'a_quantizer')

    def quantizers(self) -> dict:
        """``{child name: quantizer}`` for the quantizers that are set."""
        return {n: getattr(self, n) for n in self.QUANTIZER_NAMES
                if getattr(self, n, None) is not None}


class QuantLinear(_QuantMixin, nn.Linear):
    """``y = Q_a(x) Q_w(W)^T + b``.

    Shapes: x (..., C_in) -> y (..., C_out); ``w_quantizer`` groups along
    the output channel (dim 0 of W) when per-channel.
    """

    KIND = 'Linear'

    def forward(self, x: Tensor) -> Tensor:
        x = self.a_quantizer(x) if self.a_quantizer is not None else x
        w = self.weight
        w = self.w_quantizer(w) if self.w_quantizer is not None else w
        return F.linear(x, w, self.bias)  # (..., C_out)


class QuantConv(_QuantMixin, nn.Module):
    """``y = conv(Q_a(x), Q_w(W)) + b`` for ``nn.Conv1d`` / ``nn.Conv2d``.

    Shapes: x (B, C_in, *S) -> y (B, C_out, *S'); the quantized class is
    created per float class by :func:`quant_class_for`.
    """

    KIND = 'Conv'

    def forward(self, x: Tensor) -> Tensor:
        x = self.a_quantizer(x) if self.a_quantizer is not None else x
        w = self.weight
        w = self.w_quantizer(w) if self.w_quantizer is not None else w
        return self._conv_forward(x, w, self.bias)  # (B, C_out, *S')


class QuantMatMul(_QuantMixin, MatMul):
    """``Q_a(a) @ Q_b(b)`` for the attention products exposed by the
    attention adapters: a (B, H, N, K), b (B, H, K, M) -> (B, H, N, M)."""

    KIND = 'MatMul'
    QUANTIZER_NAMES = ('a_quantizer', 'b_quantizer')

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        a = self.a_quantizer(a) if self.a_quantizer is not None else a
        b = self.b_quantizer(b) if self.b_quantizer is not None else b
        return a @ b


_QUANT_CLASSES = {nn.Linear: QuantLinear, MatMul: QuantMatMul}
for _conv in (nn.Conv1d, nn.Conv2d):
    _QUANT_CLASSES[_conv] = type(f'Quant{_conv.__name__}',
                                 (QuantConv, _conv), {})
# mmcv's wrappers only add empty-batch handling to the torch layers
# (mmcv/cnn/bricks/wrappers.py); mmpretrain's FFN uses its Linear.
_QUANT_CLASSES[mmcv_wrappers.Linear] = QuantLinear
_QUANT_CLASSES[mmcv_wrappers.Conv2d] = _QUANT_CLASSES[nn.Conv2d]


def quant_class_for(module: nn.Module) -> Optional[type]:
    """The quantized class for ``module``'s exact type, or ``None`` when the
    framework cannot quantize it (subclasses are not assumed compatible)."""
    return _QUANT_CLASSES.get(type(module))


def to_quant(module: nn.Module, quantizers: dict) -> None:
    """Swap ``module`` to its quantized class in place and attach
    ``quantizers`` (``{'w_quantizer': q or None, ...}``).

    Raises:
        TypeError: if the module type cannot be quantized.
    """
    cls = quant_class_for(module)
    if cls is None:
        raise TypeError(f'cannot quantize {type(module).__name__}; '
                        f'supported: {[c.__name__ for c in _QUANT_CLASSES]}')
    float_cls = type(module)
    module.__class__ = cls
    module.float_cls = float_cls
    for name in cls.QUANTIZER_NAMES:
        setattr(module, name, quantizers.get(name))


def restore_float(module: nn.Module) -> None:
    """Undo :func:`to_quant`: drop the quantizers, restore the FP class."""
    for name in module.QUANTIZER_NAMES:
        if name in module._modules:
            del module._modules[name]
        module.__dict__.pop(name, None)
    module.__class__ = module.__dict__.pop('float_cls')


def is_quantized(module: nn.Module) -> bool:
    """Whether ``module`` was swapped by :func:`to_quant`."""
    return isinstance(module, _QuantMixin)
