"""Deployment: ONNX export, QDQ lowering of calibrated quantizers and an
ONNX Runtime wrapper with the PyTorch model's call."""
from .export import (INPUT_NAMES, OUTPUT_NAMES, check_inputs, export_onnx,
                     max_abs_diff, ort_session)
from .ort_model import ORTSegmentor, run_session, use_onnx_backend

__all__ = [
    'INPUT_NAMES', 'OUTPUT_NAMES', 'ORTSegmentor', 'check_inputs',
    'export_onnx', 'max_abs_diff', 'ort_session', 'run_session',
    'use_onnx_backend'
]
