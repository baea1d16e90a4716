"""Mixed precision from sensitivity: ``quant_cfg.budget``.

Given a size budget for the quantized weights, the most sensitive layers
are kept at ``high_bits`` (default 8, weights and inputs) and the rest at
the config's low setting (``w_bits`` / ``a_bits``, e.g. W4A4)::

    ptq = dict(quant_cfg=dict(w_bits=4, a_bits=4,
                              budget=dict(size_ratio=1.3)))  # or
                              # budget=dict(avg_w_bits=5.0)

Procedure (:func:`calibrate_with_budget`):

1. quantize at the low setting and calibrate on the calibration samples;
2. measure every layer's sensitivity on the same samples
   (:func:`~.sensitivity.layer_errors`: one layer quantized at a time,
   relative output error vs FP);
3. :func:`assign_bits`: greedy knapsack by sensitivity per extra weight
   byte, ``rel_err(l) / (numel(W_l) * (high_bits - bits_l) / 8)``, highest
   first; a layer is promoted when it still fits in the budget (a layer
   that does not fit is passed over and smaller ones are tried), until no
   remaining layer fits;
4. re-quantize with one extra ``rules`` entry per promoted layer
   (:func:`assigned_quant_cfg`) and calibrate only the promoted layers at
   the high setting: a layer's parameters depend only on its own FP inputs
   and quantizers (calibration caches FP inputs with every quantizer
   off), so the low layers keep the parameters of step 1, identical to a
   full calibration of the mixed model.

Size: ``S = sum over quantized layers of numel(W_l) * bits_l / 8`` bytes
(layers with a weight quantizer; biases, norms, embeddings and layers
kept FP are the float part, reported beside it at their storage size).
Layers without weights (attention products) are not candidates: they cost
no weight bytes and keep the low setting (a rule such as
``dict(pattern=..., types=['MatMul'], a_bits=8)`` keeps them at 8 bits).

The assignment is saved with the parameters (``meta['mixed_precision']``,
see :class:`BitAssignment`) and :func:`resolved_quant_cfg` rebuilds the
quantized model from a file without measuring again.
"""
import copy
import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from typing import Dict, List, Optional, Tuple

import torch.nn as nn
from torch import Tensor
from mmengine.dataset import pseudo_collate

from .calibrate import calibrate_on_dataset, calibration_indices
from .params import load_quant_params, quant_state_dict
from .quantize import QuantState, quantize_model, restore_model
from .sensitivity import errors_by_layer, layer_errors, tensor_outputs
from .settings import check_budget


@dataclass
class BitAssignment:
    """Which layers run at ``high_bits``, and the resulting sizes.

    Attributes:
        high_layers: promoted layer names, in model order.
        high_bits: their weight and input bit width.
        budget: the validated budget (``high_bits`` filled in).
        weight_bytes: size S of the quantized weights with this
            assignment (bytes, may be fractional: bits / 8).
        low_bytes: S with every layer at its low setting (pure W4 for a
            W4A4 config).
        high_bytes: S with every candidate promoted (pure W8).
        budget_bytes: the budget's bound on S.
        num_weights: quantized weight elements.
        float_bytes: parameters and buffers outside the quantized weights
            (biases, norms, embeddings, FP layers) at their storage size.
        sensitivity: ``{layer: rel_err}`` at the low setting.
    """
    high_layers: List[str]
    high_bits: int
    budget: dict
    weight_bytes: float
    low_bytes: float
    high_bytes: float
    budget_bytes: float
    num_weights: int
    float_bytes: int = 0
    sensitivity: Dict[str, float] = field(default_factory=dict)

    @property
    def avg_w_bits(self) -> float:
        """Average bits per quantized weight element."""
        return 8 * self.weight_bytes / max(self.num_weights, 1)

    @property
    def size_ratio(self) -> float:
        """S relative to the all-low size (1.0 = pure W4)."""
        return self.weight_bytes / self.low_bytes

    def to_meta(self) -> dict:
        """A plain dict (strings, numbers, lists) for the parameter file."""
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict, source: str) -> 'BitAssignment':
        """Inverse of :meth:`to_meta`.

        Raises:
            ValueError: a missing or odd field, naming ``source``.
        """
        if not isinstance(meta, dict) or not isinstance(
                meta.get('high_layers'), list) or not all(
                    isinstance(n, str) for n in meta['high_layers']):
            raise ValueError(f'{source}: the mixed-precision record must be '
                             'a dict with a list of layer names '
                             f"'high_layers', got {meta!r:.200}")
        try:
            return cls(**meta)
        except TypeError as err:
            raise ValueError(f'{source}: bad mixed-precision record: {err}'
                             ) from err

    def summary(self) -> str:
        """One log paragraph: the budget, the promoted layers and sizes."""
        mib = 2**20
        target = ', '.join(f'{k}={v}' for k, v in self.budget.items())
        return (
            f'PTQ mixed precision ({target}): {len(self.high_layers)} of '
            f'{len(self.sensitivity)} layers at W{self.high_bits}A'
            f'{self.high_bits}: {self.high_layers}\n'
            f'  quantized weights {self.weight_bytes / mib:.3f} MiB '
            f'({self.size_ratio:.3f}x all-low {self.low_bytes / mib:.3f} '
            f'MiB, all-high {self.high_bytes / mib:.3f} MiB, budget '
            f'{self.budget_bytes / mib:.3f} MiB), {self.avg_w_bits:.3f} bits '
            f'per weight; float part {self.float_bytes / mib:.3f} MiB; '
            f'total {(self.weight_bytes + self.float_bytes) / mib:.3f} MiB')


def weight_sizes(state: QuantState) -> Dict[str, Tuple[int, int]]:
    """``{layer: (weight elements, weight bits)}`` of every layer of
    ``state`` with a weight quantizer, in model order."""
    out = {}
    for name, layer in state.layers.items():
        wq = layer.quantizers().get('w_quantizer')
        if wq is not None:
            out[name] = (int(layer.weight.numel()), int(wq.bits))
    return out


def float_bytes(model: nn.Module, state: QuantState) -> int:
    """Bytes of the model's parameters and floating-point buffers that are
    not quantized weights (quantizer parameters excluded)."""
    quantized = {id(state.layers[n].weight) for n in weight_sizes(state)}
    qbuffers = {id(b) for _, q in state.quantizers() for b in q.buffers()}
    total = sum(p.numel() * p.element_size() for p in model.parameters()
                if id(p) not in quantized)
    total += sum(b.numel() * b.element_size() for b in model.buffers()
                 if b.is_floating_point() and id(b) not in qbuffers)
    return int(total)


def _exact(value: float) -> Fraction:
    """The decimal a user wrote (1.3 -> 13/10), not its binary float."""
    return Fraction(repr(float(value)))


def assign_bits(errors: Dict[str, float],
                sizes: Dict[str, Tuple[int, int]], budget: dict,
                w_bits: int) -> BitAssignment:
    """Choose the layers to promote to ``budget['high_bits']`` (see the
    module doc, step 3).

    Args:
        errors: ``{layer: rel_err}`` (NaN counts as infinitely
            sensitive); layers missing from it count as 0.
        sizes: :func:`weight_sizes` (the candidates: layers below the high
            bit width).
        budget: ``quant_cfg.budget``.
        w_bits: the config's low weight bit width (for the validation).

    Returns:
        BitAssignment: with ``S <= budget`` exactly (sizes are compared in
        integer bits against the budget as an exact fraction of the
        decimal written).

    Raises:
        ValueError: a bad budget (:func:`~.settings.check_budget`), or a
            budget below the all-low size (possible when ``rules`` keep
            layers above ``w_bits``).
    """
    budget = check_budget(budget, w_bits)
    high = budget['high_bits']
    numel = sum(n for n, _ in sizes.values())
    low_bits = sum(n * b for n, b in sizes.values())
    high_bits_total = sum(n * max(b, high) for n, b in sizes.values())
    if 'size_ratio' in budget:
        bound = _exact(budget['size_ratio']) * low_bits
    else:
        bound = _exact(budget['avg_w_bits']) * numel
    if bound < low_bits:
        raise ValueError(
            f'quant_cfg.budget {budget}: {float(bound) / 8:.0f} bytes is '
            f'below the all-low size {low_bits / 8:.0f} bytes of the '
            'quantized weights (rules keep some layers above w_bits)')
    order = {name: i for i, name in enumerate(sizes)}

    def score(name: str) -> float:
        err = errors.get(name, 0.0)
        err = math.inf if math.isnan(err) else err
        n, b = sizes[name]
        return err / (n * (high - b))

    candidates = sorted((n for n, (_, b) in sizes.items() if b < high),
                        key=lambda n: (-score(n), order[n]))
    used, chosen = low_bits, set()
    for name in candidates:
        n, b = sizes[name]
        extra = n * (high - b)
        if used + extra <= bound:
            used += extra
            chosen.add(name)
    return BitAssignment(
        high_layers=[n for n in sizes if n in chosen], high_bits=high,
        budget=budget, weight_bytes=used / 8, low_bytes=low_bits / 8,
        high_bytes=high_bits_total / 8, budget_bytes=float(bound) / 8,
        num_weights=numel,
        sensitivity={n: float(errors.get(n, 0.0)) for n in sizes})


def assigned_quant_cfg(quant_cfg: dict, high_layers: List[str],
                       high_bits: int = 8) -> dict:
    """``quant_cfg`` without ``budget``, plus one rule per promoted layer
    (``pattern`` = the escaped name, ``w_bits = a_bits = high_bits``,
    appended after the config's rules so it wins; quantizer families are
    kept, e.g. an RORQ input stays RORQ at 8 bits)."""
    cfg = copy.deepcopy(dict(quant_cfg))
    cfg.pop('budget', None)
    cfg['rules'] = list(cfg.get('rules', [])) + [
        dict(pattern=re.escape(name), types=['Linear', 'Conv'],
             w_bits=high_bits, a_bits=high_bits) for name in high_layers]
    return cfg


def resolved_quant_cfg(meta: dict, source: str) -> dict:
    """The quant_cfg that rebuilds the quantized model of a parameter
    file's ``meta`` (written by ``PTQHook``): its ``quant_cfg``, with the
    recorded assignment applied when it has a ``budget``.

    Raises:
        ValueError: no ``quant_cfg`` record, or a budget without an
            assignment record, naming ``source``.
    """
    if 'quant_cfg' not in meta:
        raise ValueError(f'{source} records no quant_cfg; it was not '
                         'written by PTQHook')
    quant_cfg = meta['quant_cfg']
    if isinstance(quant_cfg, str):
        quant_cfg = json.loads(quant_cfg)
    if quant_cfg.get('budget') is None:
        return quant_cfg
    if 'mixed_precision' not in meta:
        raise ValueError(f'{source} records quant_cfg.budget='
                         f'{quant_cfg["budget"]} but no mixed-precision '
                         'assignment (meta["mixed_precision"]): recalibrate')
    done = BitAssignment.from_meta(meta['mixed_precision'], source)
    return assigned_quant_cfg(quant_cfg, done.high_layers, done.high_bits)


def mixed_params(state: QuantState, low: Dict[str, Tensor],
                 high: Dict[str, Tensor],
                 high_layers: List[str]) -> Dict[str, Tensor]:
    """The parameters of a mixed model ``state``: every quantizer's from
    ``high`` when its layer is in ``high_layers``, else from ``low``
    (both :func:`~.params.quant_state_dict` of calibrations with the same
    quantizer types; calibration is per layer on FP inputs, so a
    calibration of the whole model at the high setting serves too).

    Raises:
        KeyError: a parameter missing from ``low`` / ``high``.
    """
    promoted = set(high_layers)
    out = {}
    for name, q in state.quantizers():
        source = high if name.rpartition('.')[0] in promoted else low
        for key in q.state_dict():
            out[f'{name}.{key}'] = source[f'{name}.{key}']
    return out


def calibration_batches(model: nn.Module, dataset, steps: int,
                        seed: int = 0) -> List[dict]:
    """The calibration samples of :func:`~.calibrate.calibrate_on_dataset`
    (same indices), each through the model's data preprocessor (batch 1).
    """
    return [model.data_preprocessor(pseudo_collate([dataset[i]]), False)
            for i in calibration_indices(len(dataset), steps, seed)]


def calibrate_with_budget(model: nn.Module, quant_cfg: dict, dataset,
                          steps: int = 32, seed: int = 0,
                          max_rows: int = 256, search: Optional[dict] = None,
                          max_cache_mb: Optional[float] = 2048) -> tuple:
    """Quantize ``model`` with mixed precision under ``quant_cfg.budget``
    (steps 1-4 of the module doc) and calibrate it.

    Args:
        model: a RIS model (plain-tensor forward ``mode='tensor'``), FP.
        quant_cfg: with ``budget`` set.
        dataset, steps, seed, max_rows, search, max_cache_mb: as for
            :func:`~.calibrate.calibrate_on_dataset`; the sensitivity is
            measured on the same ``steps`` samples.

    Returns:
        tuple: (QuantState of the calibrated mixed model, BitAssignment,
        seconds per stage: 'low' and 'high' calibrations, 'sensitivity').

    Raises:
        ValueError: no or a bad budget, or any error of
            :func:`~.quantize.quantize_model` /
            :func:`~.calibrate.calibrate_on_dataset`.  On any error the FP
            model is restored.
    """
    budget = check_budget(quant_cfg.get('budget'), quant_cfg['w_bits'])
    if budget is None:
        raise ValueError('calibrate_with_budget: quant_cfg.budget is not '
                         'set; use calibrate_on_dataset')
    times = {}
    state = quantize_model(model, assigned_quant_cfg(quant_cfg, []))
    try:
        times['low'] = calibrate_on_dataset(state, model, dataset, steps,
                                            seed, max_rows, search,
                                            max_cache_mb)['total']
        tick = time.perf_counter()
        rows = layer_errors(state, tensor_outputs(
            model, calibration_batches(model, dataset, steps, seed)))
        times['sensitivity'] = time.perf_counter() - tick
        done = assign_bits(errors_by_layer(rows), weight_sizes(state),
                           budget, quant_cfg['w_bits'])
        done.float_bytes = float_bytes(model, state)
        low_params = quant_state_dict(state)
    finally:
        restore_model(model, state)
    state = quantize_model(
        model, assigned_quant_cfg(quant_cfg, done.high_layers,
                                  done.high_bits))
    try:
        high = QuantState(layers={n: state.layers[n]
                                  for n in done.high_layers})
        times['high'] = calibrate_on_dataset(
            high, model, dataset, steps, seed, max_rows, search,
            max_cache_mb)['total'] if high.layers else 0.0
        load_quant_params(
            state, mixed_params(state, low_params, quant_state_dict(high),
                                done.high_layers),
            'mixed-precision parameters')
    except Exception:
        restore_model(model, state)
        raise
    return state, done, times
