"""Attention adapters: FP-equivalent attention modules whose two matrix
products (``matmul1``: Q·Kᵀ, ``matmul2``: softmax(·)·V) are explicit
:class:`~ris_plugins.quantization.matmul.MatMul` children, so quantized
products can replace them. Importing this package registers the adapters
for mmpretrain ``WindowMSA`` / ``MultiheadAttention`` / ViTSAM
``Attention`` / ``AttentionPool2d``, transformers BERT and CLIP
(eager + SDPA) and ``nn.MultiheadAttention``. Our ``PixelWordAttention``
and ``DenseAttentionPool2d`` have ``MatMul`` children natively (no
adapter)."""
# Importing the adapter modules registers them.
from . import hf_bert, hf_clip, mmpretrain_clip  # noqa: F401
from . import mmpretrain_swin, mmpretrain_vit, torch_mha  # noqa: F401
from .registry import (ATTENTION_ADAPTERS, convert_attention,
                       find_unconverted_attention, looks_like_attention,
                       register_attention_adapter, swap_class, unswap_class)

__all__ = [
    'ATTENTION_ADAPTERS', 'convert_attention', 'find_unconverted_attention',
    'looks_like_attention', 'register_attention_adapter', 'swap_class',
    'unswap_class'
]
