"""bf16 mixed-precision training on the CPU through mmengine's optimizer
wrapper interface."""
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from mmseg.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CPUAmpOptimWrapper(AmpOptimWrapper):
    """mmengine's :class:`~mmengine.optim.AmpOptimWrapper` for the CPU:
    forward and loss run under ``torch.autocast('cpu',
    dtype=torch.bfloat16)``, backward and the optimizer step are plain.

    mmengine 0.10.7's ``AmpOptimWrapper`` asserts a GPU (NPU, MLU, MUSA)
    and always builds a ``GradScaler``. bfloat16 has float32's exponent
    range, so gradients do not underflow and no loss scaling is needed
    (the torch AMP recipe for CPU autocast uses no scaler either).
    Parameters, gradients and optimizer states stay float32; only the ops
    on torch's CPU autocast list (convolutions, linear layers, matrix
    products) compute in bfloat16. On a GPU use the stock
    ``AmpOptimWrapper`` (fp16 with dynamic loss scaling, or
    ``dtype='bfloat16'``).

    Config::

        optim_wrapper = dict(type='CPUAmpOptimWrapper', optimizer=...)

    Args:
        dtype (str | torch.dtype): Autocast dtype; only ``'bfloat16'``
            (torch's CPU autocast supports no other).
        loss_scale: Accepted so that an ``AmpOptimWrapper`` config can
            switch type; must be ``'dynamic'`` (the default) or ``None``
            and is ignored (no scaler).
        **kwargs: :class:`~mmengine.optim.OptimWrapper` arguments
            (``optimizer``, ``accumulative_counts``, ``clip_grad``).

    Raises:
        ValueError: ``dtype`` is not bfloat16, or ``loss_scale`` is a
            number / dict (loss scaling is an fp16 remedy; name both
            valid choices).
    """

    def __init__(self,
                 dtype: Union[str, torch.dtype] = 'bfloat16',
                 loss_scale: Union[str, None] = 'dynamic',
                 **kwargs) -> None:
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(
                f'CPUAmpOptimWrapper autocasts to bfloat16 only (torch CPU '
                f'autocast); got dtype={dtype!r}. Use AmpOptimWrapper on a '
                f'GPU for float16')
        if loss_scale not in ('dynamic', None):
            raise ValueError(
                f'CPUAmpOptimWrapper uses no loss scaling (bfloat16 keeps '
                f"float32's range); loss_scale must be 'dynamic' or None, "
                f'got {loss_scale!r}')
        # Skip AmpOptimWrapper.__init__ (GPU assertion and GradScaler).
        OptimWrapper.__init__(self, **kwargs)
        self._scale_update_param = None
        self.loss_scaler = None
        self.cast_dtype = torch.bfloat16

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """Unscaled back-propagation (``OptimWrapper.backward``)."""
        OptimWrapper.backward(self, loss, **kwargs)

    def step(self, **kwargs) -> None:
        """Gradient clipping (if configured) and optimizer step, unscaled
        (``OptimWrapper.step``)."""
        OptimWrapper.step(self, **kwargs)

    def state_dict(self) -> dict:
        """The optimizer's state dict (there is no scaler state)."""
        return OptimWrapper.state_dict(self)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load an optimizer state dict. A ``loss_scaler`` entry (from an
        ``AmpOptimWrapper`` checkpoint) is dropped: there is no scaler."""
        state_dict = dict(state_dict)
        state_dict.pop('loss_scaler', None)
        if 'base_param_settings' in state_dict:
            self.base_param_settings = state_dict.pop('base_param_settings')
        self.optimizer.load_state_dict(state_dict)

    @contextmanager
    def optim_context(self, model: nn.Module):
        """Gradient-accumulation context of ``OptimWrapper`` plus
        ``torch.autocast('cpu', dtype=torch.bfloat16)``."""
        with OptimWrapper.optim_context(self, model), torch.autocast(
                device_type='cpu', dtype=self.cast_dtype):
            yield
