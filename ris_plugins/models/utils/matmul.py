"""An explicit matrix product as a module."""
import torch
import torch.nn as nn
from torch import Tensor


class MatMul(nn.Module):
    """``torch.matmul(a, b)`` as a module, with no parameters.

    Attention modules of this project (``PixelWordAttention``,
    ``DenseAttentionPool2d``) compute ``Q Kᵀ`` (``matmul1``) and
    ``softmax(.) V`` (``matmul2``) through two of these children, so a
    quantization engine can wrap their inputs like those of any other
    layer (PTQ4ViT / PTQ4RIS quantize both inputs of both products,
    ``hahnyuan/PTQ4ViT: quant_layers/matmul.py``). The result is exactly
    ``torch.matmul``'s; having no parameters, it adds no state-dict keys.
    """

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        """a (..., N, K), b (..., K, M) (batch dims broadcast) ->
        (..., N, M)."""
        return torch.matmul(a, b)
