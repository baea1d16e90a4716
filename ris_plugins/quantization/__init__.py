"""Post-training quantization of RIS models (PTQ4RIS and baselines)."""
from . import attention  # noqa: F401  (registers the attention adapters)
from .calibrate import all_gather_caches, calibrate, search_layer
from .matmul import MatMul
from .params import (load_quant_params, quant_state_dict, read_quant_params,
                     save_quant_params)
from .qmodules import QuantConv, QuantLinear, QuantMatMul
from .quantize import QuantState, quantize_model, restore_model
from .quantizers import *  # noqa: F401,F403

__all__ = [
    'MatMul', 'QuantConv', 'all_gather_caches', 'QuantLinear', 'QuantMatMul', 'QuantState',
    'calibrate', 'load_quant_params', 'quant_state_dict', 'quantize_model',
    'read_quant_params', 'restore_model', 'save_quant_params', 'search_layer'
]
