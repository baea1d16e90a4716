"""Calibration: one FP pass that caches layer inputs, then per-layer
initialisation and an output-aware search on the cached tensors.

Cost: one forward of the model per calibration sample (all layers cached
at once, inputs sub-sampled to ``max_rows`` rows per sample), then local
searches that re-evaluate only the layer itself.  This replaces PTQ4ViT /
PTQ4RIS's Stage A (``hahnyuan/PTQ4ViT: utils/calibrator.py``
``HessianQuantCalibrator``), which runs a full forward+backward of the
model per layer and per sample (~4.7k passes for LAVT, ``ptq4ris.md``
§12).

Search objective: the squared error of the layer's output against its FP
output on the cached FP inputs, ``sum ||layer_Q(X) - layer(X)||^2`` reduced
per quantizer group (output channel, head or tensor).  PTQ4ViT weights it
by the squared output gradient of a KL between the FP model and itself,
which is floating-point noise when all layers are FP (PTQ4ViT issue #23);
an unweighted local output error is the meaningful part of that objective.
Candidate sets are PTQ4ViT's (``c_i x`` the initial step, 20 power-of-two
softmax splits); rounds alternate between a layer's quantizers.
"""
import math
import time
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_gather_object
from mmengine.logging import print_log
from torch import Tensor

from .quantize import QuantState


def _even_indices(n: int, k: int) -> Tensor:
    """k evenly spaced indices in [0, n) (all of them if k >= n)."""
    if k >= n:
        return torch.arange(n)
    return torch.linspace(0, n - 1, k).round().long()


def subsample(kind: str, args: tuple, max_rows: int) -> tuple:
    """Deterministic sub-sample of one call's inputs, on CPU.

    Linear x (..., C) -> (r, C) rows; Conv x (B, C, *S) -> a centred crop of
    at most ``ceil(sqrt(max_rows))`` per spatial dim; MatMul a (B', H, N, K),
    b (B', H, K, M) -> the same evenly spaced slices of dim 0 (at most
    ``max_rows // N`` of them).
    """
    if kind == 'Linear':
        x = args[0].detach().reshape(-1, args[0].shape[-1])  # (R, C)
        return (x[_even_indices(len(x), max_rows)].float().cpu(), )
    if kind == 'Conv':
        x = args[0].detach()
        side = math.ceil(math.sqrt(max_rows))
        for dim in range(2, x.dim()):
            start = max(0, (x.shape[dim] - side) // 2)
            x = x.narrow(dim, start, min(side, x.shape[dim]))
        # a copy: a view would keep the whole activation alive
        return (x.float().cpu().clone(), )
    a, b = (t.detach() for t in args)
    lead = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a = a.expand(*lead, *a.shape[-2:])  # (B', H, N, K)
    b = b.expand(*lead, *b.shape[-2:])  # (B', H, K, M)
    idx = _even_indices(a.shape[0], max(1, max_rows // a.shape[-2]))
    return a[idx].float().cpu(), b[idx].float().cpu()


class InputCache:
    """Forward pre-hooks caching every quantized layer's sub-sampled inputs.

    ``caches[name]`` is a list, one entry per recorded call, of input
    tuples; :meth:`tag` labels the entries of the current sample so caches
    from several processes can be merged in sample order.

    Raises (on a recorded call):
        FloatingPointError: NaN or Inf in a layer input, naming the layer.
    """

    def __init__(self, state: QuantState, max_rows: int = 256):
        self.max_rows = max_rows
        self.caches: Dict[str, list] = {n: [] for n in state.layers}
        self.position = 0
        self._handles = [
            layer.register_forward_pre_hook(self._hook(name, layer.KIND))
            for name, layer in state.layers.items()]

    def _hook(self, name: str, kind: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            for t in args:
                if not torch.isfinite(t).all():
                    raise FloatingPointError(
                        f'NaN or Inf in the input of {name!r} during '
                        f'calibration (sample {self.position})')
            self.caches[name].append(
                (self.position, subsample(kind, args, self.max_rows)))
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def merged(self, name: str) -> List[Tensor]:
        """The cached inputs of one layer, each operand concatenated over
        calls in sample order (dim 0)."""
        entries = sorted(self.caches[name], key=lambda e: e[0])
        if not entries:
            raise RuntimeError(f'layer {name!r} was never called during '
                               'calibration; skip it with a rule')
        num = len(entries[0][1])
        return [torch.cat([e[1][i] for e in entries]) for i in range(num)]




def all_gather_caches(caches: Dict[str, list]) -> Dict[str, list]:
    """Merge every process's ``{layer: [(position, inputs)]}`` (DDP).

    After this each process holds all samples' cached inputs; as entries
    are ordered by sample position before use, the parameters computed
    from them equal a single process's on the same samples.
    """
    merged = {name: [] for name in caches}
    for part in all_gather_object(caches):
        for name, entries in part.items():
            merged[name].extend(entries)
    return merged


def _operands(kind: str) -> tuple:
    """Quantizer children in the order of the layer's inputs."""
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
    whose outputs hold at most ``chunk_elems`` elements) and select the
    best per group; returns the number of candidates."""
    quantizers = layer.quantizers()
    q = quantizers[child]
    ops = {c: (quantizers[c](t) if c in quantizers else t)
           for c, t in fp.items() if c != child}
    n = q.num_candidates()
    step = max(1, chunk_elems // max(1, ref.numel()))
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
    fp = dict(zip(_operands(kind), inputs))
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
    attention slices, evenly spaced along dim 0."""
    per_item = 1 if kind == 'Linear' else (
        inputs[0].shape[-2] if kind == 'MatMul' else
        max(1, inputs[0][0, 0].numel()))
    idx = _even_indices(inputs[0].shape[0], max(1, rows // per_item))
    return [t[idx] for t in inputs]


def calibrate(state: QuantState,
              run_sample: Callable[[int], None],
              positions: Iterable[int],
              max_rows: int = 256,
              search: Optional[dict] = None,
              gather: Optional[Callable] = None,
              log_interval: int = 8) -> Dict[str, float]:
    """Calibrate every quantizer of ``state`` and enable them.

    Args:
        run_sample: runs the FP model on the calibration sample at a
            position (the caller chooses data and batching).
        positions: the sample positions this process runs.
        max_rows: rows cached per layer and call (see :func:`subsample`).
        search: ``None`` (initialisation only: the quantizers' observers)
            or ``dict(rounds=1, rows=1024)``: output-aware search on at
            most ``rows`` cached rows per layer.
        gather: merges ``{layer: [(position, inputs)]}`` across processes
            (DDP); every process then computes the same parameters.

    Returns:
        dict: seconds spent per stage ('collect', 'init', 'search').

    Raises:
        ValueError: no positions to run and no ``gather`` (0 calibration
            samples).
        FloatingPointError: NaN or Inf in a calibration input.
        RuntimeError: a quantized layer never ran during calibration.
    """
    positions = list(positions)
    if not positions and gather is None:
        raise ValueError('calibrate: no calibration samples (positions is '
                         'empty); calibration needs at least one')
    times = {}
    cache = InputCache(state, max_rows)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            for i, pos in enumerate(positions):
                cache.position = pos
                run_sample(pos)
                if (i + 1) % log_interval == 0 or i + 1 == len(positions):
                    print_log(f'PTQ collect: {i + 1}/{len(positions)} '
                              'samples', logger='current')
    finally:
        cache.remove()
    if gather is not None:
        cache.caches = gather(cache.caches)
    times['collect'] = time.perf_counter() - start
    times['init'] = times['search'] = 0.0
    for n, (name, layer) in enumerate(state.layers.items()):
        inputs = cache.merged(name)
        cache.caches[name] = None  # free as we go
        kind = layer.KIND
        tick = time.perf_counter()
        _init_layer(layer, kind, inputs)
        times['init'] += time.perf_counter() - tick
        if search:
            tick = time.perf_counter()
            with torch.no_grad():
                search_layer(layer, kind,
                             search_subset(kind, inputs,
                                           search.get('rows', 1024)),
                             search.get('rounds', 1))
            times['search'] += time.perf_counter() - tick
        if (n + 1) % (log_interval * 4) == 0:
            print_log(f'PTQ calibrate: {n + 1}/{len(state.layers)} layers',
                      logger='current')
    return times


def _init_layer(layer: nn.Module, kind: str, inputs: List[Tensor]) -> None:
    fp = dict(zip(_operands(kind), inputs))
    if kind != 'MatMul':
        fp['w_quantizer'] = layer.weight.detach()
    for child, q in layer.quantizers().items():
        q.init_params(fp[child])
        q.enabled = True
