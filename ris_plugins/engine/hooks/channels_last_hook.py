"""The ``channels_last`` memory format as a config switch."""
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmseg.registry import HOOKS


def to_channels_last(model: nn.Module) -> nn.Module:
    """Store every 4-D parameter and buffer of ``model`` (convolution
    kernels (C_out, C_in, k, k)) in the ``channels_last`` (NHWC) memory
    format, in place; other tensors are left as they are.

    Shapes, values and ``state_dict`` keys are unchanged: only the strides
    change, so outputs equal the default (NCHW) model's up to float
    rounding. A convolution whose kernel is ``channels_last`` returns a
    ``channels_last`` map, so the format propagates through the network
    without converting the inputs (oneDNN / cuDNN then use their NHWC
    kernels).

    Returns:
        nn.Module: ``model`` itself.
    """
    return model.to(memory_format=torch.channels_last)


@HOOKS.register_module()
class ChannelsLastHook(Hook):
    """Converts the runner's model with :func:`to_channels_last` before the
    run (training, validation or test), so that convolutional models
    (CRIS / ETRIS ResNets, the baseline, the CNN necks and heads) use
    NHWC kernels.

    Config::

        custom_hooks = [dict(type='ChannelsLastHook')]

    It changes no value, so checkpoints written with it load into models
    without it and back. The speed-up depends on the hardware (see the
    method READMEs for the measured effect).
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner) -> None:
        """Convert ``runner.model`` (the wrapped module for wrappers)."""
        model = runner.model
        to_channels_last(model.module if is_model_wrapper(model) else model)
