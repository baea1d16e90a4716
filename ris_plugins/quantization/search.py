"""Output-aware search of one layer's quantizers on cached FP inputs.

Objective: the squared error of the layer's output against its FP output
on the cached FP inputs, ``sum ||layer_Q(X) - layer(X)||^2`` reduced per
quantizer group (output channel, head or tensor).  PTQ4ViT weights it by
the squared output gradient of a KL between the FP model and itself,
which is floating-point noise when all layers are FP (PTQ4ViT issue #23);
an unweighted local output error is the meaningful part of that
objective.  Candidate sets are PTQ4ViT's (``c_i x`` the initial step, 20
power-of-two softmax splits); rounds alternate between a layer's
quantizers (``hahnyuan/PTQ4ViT: utils/calibrator.py``
``HessianQuantCalibrator`` re-expressed as local searches).
"""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .cache import _even_indices


def operands(kind: str) -> tuple:
    """Quantizer children in the order of the layer's inputs: ``('a_quantizer',
    'b_quantizer')`` (MatMul) or ``('a_quantizer', 'w_quantizer')``."""
    return (('a_quantizer', 'b_quantizer') if kind == 'MatMul' else
            ('a_quantizer', 'w_quantizer'))


def _layer_output(layer: nn.Module, kind: str, ops: Dict[str, Tensor]):
    """The layer's output for already (fake-)quantized operands."""
    if kind == 'MatMul':
        return ops['a_quantizer'] @ ops['b_quantizer']  # (B', H, N, M)
    if kind == 'Linear':
        return F.linear(ops['a_quantizer'], ops['w_quantizer'], layer.bias)
    return layer._conv_forward(ops['a_quantizer'], ops['w_quantizer'],
                               layer.bias)  # (B, C_out, *S)


def _group_dim(kind: str, child: str, quantizer: nn.Module) -> Optional[int]:
    """The output dim a quantizer's groups map to, -1 for per-tensor, or
    None when per-group output errors are not separable (e.g. per input
    channel): then the search is skipped for it."""
    if tuple(quantizer.group_shape) == ():
        return -1
    if kind == 'MatMul' and getattr(quantizer, 'ch_axis', None) == 1:
        return 1  # per head: (B', H, N, M)
    if child == 'w_quantizer' and getattr(quantizer, 'ch_axis', 0) == 0:
        return 1 if kind == 'Conv' else 'last'  # output channels
    return None


def _reduce(err: Tensor, dim) -> Tensor:
    """Sum a squared error (k, *out) to (k,) per tensor or (k, G) per
    group, in float64."""
    if dim == -1:
        return err.flatten(1).sum(1, dtype=torch.float64)
    dim = err.dim() - 1 if dim == 'last' else dim + 1
    return err.transpose(1, dim).flatten(2).sum(2, dtype=torch.float64)


def _candidate_outputs(layer: nn.Module, kind: str, ops: Dict[str, Tensor],
                       child: str, cands: Tensor) -> Tensor:
    """Layer outputs (k, *out) for k candidate versions (k, *operand) of
    operand ``child``, the other operands fixed, in one batched call."""
    k = cands.shape[0]
    if kind == 'MatMul':
        a = cands if child == 'a_quantizer' else ops['a_quantizer']
        b = cands if child == 'b_quantizer' else ops['b_quantizer']
        return a @ b  # (k, B', H, N, M)
    if kind == 'Linear':
        x = cands if child == 'a_quantizer' else ops['a_quantizer']
        w = cands if child == 'w_quantizer' else ops['w_quantizer']
        out = x @ w.transpose(-1, -2)  # (k, R, C_out)
        return out if layer.bias is None else out + layer.bias
    if child == 'a_quantizer':
        out = layer._conv_forward(cands.flatten(0, 1), ops['w_quantizer'],
                                  layer.bias)  # (k B, C_out, *S)
        return out.unflatten(0, (k, -1))  # (k, B, C_out, *S)
    if layer.groups != 1:
        return torch.stack([
            layer._conv_forward(ops['a_quantizer'], w, layer.bias)
            for w in cands])
    bias = None if layer.bias is None else layer.bias.repeat(k)
    out = layer._conv_forward(ops['a_quantizer'], cands.flatten(0, 1),
                              bias)  # (B, k C_out, *S)
    return out.unflatten(1, (k, -1)).transpose(0, 1)  # (k, B, C_out, *S)


def _search_quantizer(layer: nn.Module, kind: str, child: str,
                      fp: Dict[str, Tensor], ref: Tensor, dim,
                      chunk_elems: int) -> int:
    """Evaluate every candidate of one quantizer (in chunks of candidates
    whose outputs, and whose stacked candidate operands, hold at most
    ``chunk_elems`` elements each; a weight candidate of a wide layer can
    be larger than the layer's output) and select the
    best per group; returns the number of candidates."""
    quantizers = layer.quantizers()
    q = quantizers[child]
    ops = {c: (quantizers[c](t) if c in quantizers else t)
           for c, t in fp.items() if c != child}
    n = q.num_candidates()
    per_candidate = max(1, ref.numel(), fp[child].numel())
    step = max(1, chunk_elems // per_candidate)
    errors = []
    for i0 in range(0, n, step):
        cands = torch.stack([q.fake_quant_candidate(fp[child], i)
                             for i in range(i0, min(n, i0 + step))])
        out = _candidate_outputs(layer, kind, ops, child, cands)
        errors.append(_reduce((out - ref).square(), dim))
    q.select(torch.cat(errors).argmin(0))  # first minimum on ties
    return n


def search_layer(layer: nn.Module, kind: str, inputs: List[Tensor],
                 rounds: int = 1, chunk_elems: int = 2**24,
                 children: Optional[tuple] = None) -> Dict[str, int]:
    """Output-aware search of each quantizer of one layer (see module doc).

    Args:
        inputs: FP inputs ``[x]`` (Linear/Conv) or ``[a, b]`` (MatMul).
        rounds: alternating rounds over the layer's quantizers.
        chunk_elems: memory bound of one batched candidate evaluation.
        children: search only these quantizers (default: all that have
            candidates).

    Returns:
        dict: number of candidates evaluated per quantizer child.
    """
    fp = dict(zip(operands(kind), inputs))
    if kind != 'MatMul':
        fp['w_quantizer'] = layer.weight.detach()
    ref = _layer_output(layer, kind, fp)[None]  # (1, *out)
    evaluated = {}
    for _ in range(rounds):
        for child, q in layer.quantizers().items():
            dim = _group_dim(kind, child, q)
            if (q.num_candidates() == 0 or dim is None
                    or (children is not None and child not in children)):
                continue
            evaluated[child] = evaluated.get(child, 0) + _search_quantizer(
                layer, kind, child, fp, ref, dim, chunk_elems)
    return evaluated


def search_subset(kind: str, inputs: List[Tensor], rows: int) -> List[Tensor]:
    """At most ``rows`` rows (Linear), or the equivalent number of crops /
    attention slices, evenly spaced along dim 0 of every operand."""
    per_item = 1 if kind == 'Linear' else (
        inputs[0].shape[-2] if kind == 'MatMul' else
        max(1, inputs[0][0, 0].numel()))
    idx = _even_indices(inputs[0].shape[0], max(1, rows // per_item))
    return [t[idx] for t in inputs]
