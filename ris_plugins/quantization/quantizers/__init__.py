"""Fake quantizers registered in ``mmseg.registry.MODELS``."""
from .base import BaseQuantizer, check_bits, check_choice
from .rorq import RORQQuantizer
from .twin_uniform import TwinUniformGELUQuantizer, TwinUniformSoftmaxQuantizer
from .uniform import UniformQuantizer

__all__ = [
    'BaseQuantizer', 'check_bits', 'check_choice', 'UniformQuantizer',
    'TwinUniformSoftmaxQuantizer', 'TwinUniformGELUQuantizer', 'RORQQuantizer'
]
