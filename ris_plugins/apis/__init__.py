"""Inference on your own images and sentences."""
from .inference import (decode_texts, find_config, inference_model,
                        load_weights, to_original)
from .inferencer import RefSegInferencer
from .pipeline import RefInferencePipeline

__all__ = [
    'RefSegInferencer', 'RefInferencePipeline', 'decode_texts',
    'find_config', 'inference_model', 'load_weights', 'to_original'
]
