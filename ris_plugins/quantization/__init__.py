"""Post-training quantization of RIS models (PTQ4RIS and baselines)."""
from . import attention  # noqa: F401  (registers the attention adapters)
from .cache import all_gather_caches
from .calibrate import calibrate, calibrate_on_dataset
from .matmul import MatMul
from .mixed_precision import (BitAssignment, assign_bits, assigned_quant_cfg,
                              calibrate_with_budget, resolved_quant_cfg)
from .params import (file_sha256, load_quant_file, load_quant_params,
                     quant_bits, quant_state_dict, read_quant_params,
                     save_quant_params, weights_sha256)
from .qmodules import QuantConv, QuantLinear, QuantMatMul
from .quantize import (QuantState, quantize_model, restore_model,
                       validate_quant_cfg)
from .quantizers import *  # noqa: F401,F403
from .registry import QUANTIZERS
from .search import search_layer
from .sensitivity import LayerSensitivity, layer_errors, tensor_outputs

__all__ = [
    'BitAssignment', 'LayerSensitivity', 'MatMul', 'QUANTIZERS', 'QuantConv',
    'QuantLinear', 'QuantMatMul', 'QuantState', 'all_gather_caches',
    'assign_bits', 'assigned_quant_cfg', 'calibrate', 'calibrate_on_dataset',
    'calibrate_with_budget', 'file_sha256', 'layer_errors',
    'load_quant_file', 'load_quant_params', 'quant_bits', 'quant_state_dict',
    'quantize_model', 'read_quant_params', 'resolved_quant_cfg',
    'restore_model', 'save_quant_params', 'search_layer', 'tensor_outputs',
    'validate_quant_cfg', 'weights_sha256'
]
