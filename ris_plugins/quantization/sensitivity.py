"""Per-layer quantization sensitivity: one layer quantized at a time.

With every other layer in FP, the quantizers of one layer (its weight and
input quantizers, or both operands of an attention product) are switched
on, the model is run on a fixed set of samples and the relative error of
its outputs against the FP outputs is recorded::

    rel_err(l) = ||y_l - y_fp||^2 / ||y_fp||^2

(squared L2 over every output element of every sample; dimensionless,
>= 0, 0 = the layer's quantization changes nothing).  This is the usual
one-layer-at-a-time sensitivity analysis of mixed-precision quantization,
with the output error measured directly (HAWQ, Dong et al. ICCV 2019,
ranks layers by a Hessian trace instead).  It drives
:mod:`.mixed_precision` and ``tools/analysis_tools/ptq_sensitivity.py``.

Cost: one forward over the samples per quantized layer, plus the FP one.
"""
from typing import Callable, Dict, List, NamedTuple, Sequence

import torch
import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

from .quantize import QuantState


class LayerSensitivity(NamedTuple):
    """One row of :func:`layer_errors`.

    Attributes:
        name: the layer's module name.
        quantizers: its quantizers, e.g. ``'w:UniformQuantizer4, a:...'``.
        rel_err: ``||y_l - y_fp||^2 / ||y_fp||^2`` (>= 0).
    """
    name: str
    quantizers: str
    rel_err: float


def tensor_outputs(model: nn.Module,
                   batches: Sequence[dict]) -> Callable[[], Tensor]:
    """A function returning the model's plain-tensor outputs on
    ``batches`` (each the output of the model's data preprocessor), all
    batches concatenated along dim 0 (e.g. (N, C, h, w) logits), no grad.
    """
    def run() -> Tensor:
        with torch.no_grad():
            return torch.cat([model(**b, mode='tensor').float()
                              for b in batches])
    return run


def layer_errors(state: QuantState, run: Callable[[], Tensor],
                 log_interval: int = 16) -> List[LayerSensitivity]:
    """Sensitivity of every calibrated layer of ``state``, worst first.

    Args:
        state: from :func:`~.quantize.quantize_model`, calibrated (every
            quantizer holds parameters).
        run: runs the model on the measurement samples and returns its
            outputs (any shape, the same every call), e.g.
            :func:`tensor_outputs`.
        log_interval: log progress every this many layers.

    Returns:
        list: :class:`LayerSensitivity` rows sorted by ``rel_err``,
        largest first (ties: model order).  Each quantizer's ``enabled``
        flag is restored afterwards.

    Raises:
        RuntimeError: a quantizer is not calibrated, or the FP outputs are
            all zero (the relative error is undefined).
    """
    quantizers = dict(state.quantizers())
    uncalibrated = [n for n, q in quantizers.items() if not q.calibrated]
    if uncalibrated:
        raise RuntimeError(f'layer_errors: {len(uncalibrated)} quantizers '
                           f'are not calibrated, e.g. {uncalibrated[:3]}; '
                           'calibrate first')
    enabled = {n: q.enabled for n, q in quantizers.items()}
    try:
        for q in quantizers.values():
            q.enabled = False
        ref = run()
        norm = ref.square().sum()
        if not norm > 0:
            raise RuntimeError('layer_errors: the FP outputs are all zero; '
                               'the relative error is undefined')
        rows = []
        for name, layer in state.layers.items():
            own = layer.quantizers()
            for q in own.values():
                q.enabled = True
            err = ((run() - ref).square().sum() / norm).item()
            for q in own.values():
                q.enabled = False
            kinds = ', '.join(f'{c[0]}:{type(q).__name__}{q.bits}'
                              for c, q in own.items())
            rows.append(LayerSensitivity(name, kinds, err))
            if len(rows) % log_interval == 0:
                print_log(f'PTQ sensitivity: {len(rows)}/{len(state.layers)}'
                          ' layers', logger='current')
    finally:
        for n, q in quantizers.items():
            q.enabled = enabled[n]
    order = {name: i for i, name in enumerate(state.layers)}
    return sorted(rows, key=lambda r: (-r.rel_err, order[r.name]))


def errors_by_layer(rows: Sequence[LayerSensitivity]) -> Dict[str, float]:
    """``{layer name: rel_err}`` of :func:`layer_errors` rows."""
    return {r.name: r.rel_err for r in rows}
