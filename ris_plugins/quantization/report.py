"""Text report of what a quantization config did to a model."""
from collections import Counter

import torch.nn as nn

from .quantize import QuantState


def model_size_mb(model: nn.Module, state: QuantState) -> tuple:
    """(FP32 size, fake-quantized size) of the parameters in MiB.

    Quantized weights count ``bits`` per element (plus nothing for their
    scales, which are a rounding error); every other parameter counts 32
    bits.  Buffers (e.g. BN statistics) are excluded.
    """
    total_bits = 32 * sum(p.numel() for p in model.parameters())
    quant_bits = total_bits
    for layer in state.layers.values():
        wq = layer.quantizers().get('w_quantizer')
        if wq is not None:
            quant_bits -= (32 - wq.bits) * layer.weight.numel()
    return total_bits / 8 / 2**20, quant_bits / 8 / 2**20


def format_report(model: nn.Module, state: QuantState,
                  quant_cfg: dict) -> str:
    """Human-readable summary: layers quantized per kind and quantizer
    type, layers kept FP by rule, modules that cannot be quantized (never
    skipped silently), and the model size."""
    kinds = Counter(type(layer).__name__ for layer in state.layers.values())
    qtypes = Counter(f'{name.rsplit(".", 1)[-1]}: {type(q).__name__}'
                     f'(bits={q.bits})' for name, q in state.quantizers())
    fp_mb, q_mb = model_size_mb(model, state)
    lines = [
        f'PTQ report: W{quant_cfg["w_bits"]}A{quant_cfg["a_bits"]}, '
        f'{len(state.layers)} layers quantized ' +
        ', '.join(f'{k} x{v}' for k, v in sorted(kinds.items())),
        '  quantizers: ' + '; '.join(f'{k} x{v}'
                                     for k, v in sorted(qtypes.items())),
        f'  kept FP by rule ({len(state.skipped)}): {state.skipped}',
        f'  cannot be quantized, kept FP ({len(state.unsupported)}): '
        f'{state.unsupported}',
        f'  attention without adapter, products kept FP '
        f'({len(state.unconverted_attention)}): '
        f'{state.unconverted_attention}',
        '  kept FP by design: LayerNorm/BatchNorm/GroupNorm, embeddings, '
        'Softmax, GELU, residual adds',
        f'  parameter size: FP32 {fp_mb:.2f} MiB -> {q_mb:.2f} MiB',
    ]
    return '\n'.join(lines)
