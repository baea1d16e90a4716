"""Fake quantizers, registered in ``QUANTIZERS``
(:mod:`ris_plugins.quantization.registry`, a child of mmseg's ``MODELS``).
"""
from .base import (DEFAULT_FAITHFUL, BaseQuantizer, check_bits,
                   check_choice)
from .rorq import RORQQuantizer
from .twin_uniform import TwinUniformGELUQuantizer, TwinUniformSoftmaxQuantizer
from .uniform import UniformQuantizer

__all__ = [
    'DEFAULT_FAITHFUL', 'BaseQuantizer', 'check_bits', 'check_choice', 'UniformQuantizer',
    'TwinUniformSoftmaxQuantizer', 'TwinUniformGELUQuantizer', 'RORQQuantizer'
]
