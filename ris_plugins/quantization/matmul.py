"""An explicit matrix product, so quantizers can be attached to its inputs."""
import torch
import torch.nn as nn
from torch import Tensor


class MatMul(nn.Module):
    """``torch.matmul(a, b)`` as a module.

    The attention adapters (:mod:`ris_plugins.quantization.attention`) call
    one for ``Q Kᵀ`` (``matmul1``) and one for ``softmax(.) V``
    (``matmul2``); a quantization engine swaps them for quantized products
    (PTQ4ViT / PTQ4RIS quantize both inputs of both products).
    """

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """a (..., N, K), b (..., K, M) (batch dims broadcast) ->
        (..., N, M)."""
        return torch.matmul(a, b)
