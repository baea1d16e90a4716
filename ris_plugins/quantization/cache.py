"""Caching of the quantized layers' FP inputs during calibration.

Forward pre-hooks record a deterministic sub-sample of every call's inputs
on CPU (:func:`subsample`), tagged with the calibration sample's position
so caches from several processes (DDP) merge in sample order
(:func:`all_gather_caches`).  Which layers are cached is up to the caller
(:mod:`.calibrate` caches one group of layers at a time).
"""
import ctypes
import ctypes.util
import math
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
from mmengine.dist import all_gather_object
from torch import Tensor


def _malloc_trim():
    """glibc's ``malloc_trim``, or None on another C library."""
    try:
        return ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6'
                           ).malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Hand the C allocator's free pages back to the OS (glibc
    ``malloc_trim(0)``).

    Calibration interleaves long-lived cached inputs with the forward's
    short-lived activations, so glibc's heap cannot shrink when the
    activations are freed, and every later forward or search grows it
    further: streamed full-LAVT W4A4 calibration (32 samples, 2048 MiB
    cache budget) grew the process by 4.6 GB with a cache of at most 2 GB.
    Trimming after each forward and each calibrated layer keeps the
    process near the memory it actually uses (2.6 GB there). Results do
    not change.

    Returns:
        bool: whether memory could be trimmed (False without glibc).
    """
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


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
    """Forward pre-hooks caching the sub-sampled inputs of some layers.

    ``caches[name]`` is a list, one entry per recorded call, of
    ``(position, inputs)``; ``position`` (set by the caller before each
    sample) labels the entries so caches from several processes can be
    merged in sample order.

    Args:
        layers: ``{name: quantized layer}`` to cache (each has ``KIND``).
        max_rows: rows kept per layer and call (see :func:`subsample`).

    Raises (on a recorded call):
        FloatingPointError: NaN or Inf in a layer input, naming the layer.
    """

    def __init__(self, layers: Dict[str, nn.Module], max_rows: int = 256):
        self.max_rows = max_rows
        self.caches: Dict[str, list] = {n: [] for n in layers}
        self.position = 0
        self._handles = [
            layer.register_forward_pre_hook(self._hook(name, layer.KIND))
            for name, layer in layers.items()]

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
        """Remove the hooks (the cached entries stay)."""
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


class CallProbe:
    """Forward pre-hooks recording, for one sample, the order in which the
    quantized layers are called and the bytes :class:`InputCache` would
    keep per call (the sub-sampled inputs are computed and dropped).

    Attributes:
        order (list[str]): layer names, one per call, in call order.
        nbytes (dict[str, int]): cached bytes per layer for this sample.
    """

    def __init__(self, layers: Dict[str, nn.Module], max_rows: int = 256):
        self.order: List[str] = []
        self.nbytes: Dict[str, int] = {n: 0 for n in layers}
        self._handles = [
            layer.register_forward_pre_hook(
                self._hook(name, layer.KIND, max_rows))
            for name, layer in layers.items()]

    def _hook(self, name: str, kind: str, max_rows: int) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            self.order.append(name)
            self.nbytes[name] += sum(
                t.numel() * t.element_size()
                for t in subsample(kind, args, max_rows))
        return hook

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


def plan_groups(order: List[str], nbytes: Dict[str, int], samples: int,
                budget_bytes: Optional[float]) -> List[List[str]]:
    """Split the layers into groups, contiguous in call order, whose cached
    inputs over ``samples`` samples hold at most ``budget_bytes`` (a
    layer larger than the budget gets a group of its own).

    Args:
        order: layer names in call order (repeats allowed; first call
            counts), from :class:`CallProbe`.
        nbytes: cached bytes per layer for one sample.
        samples: number of calibration samples (all processes together).
        budget_bytes: cache budget; None = one group (every layer's inputs
            held at once).

    Returns:
        list[list[str]]: the groups in call order; layers that were never
        called form the last group (their calibration then fails with the
        usual error).
    """
    first = list(dict.fromkeys(order))
    never = [n for n in nbytes if n not in set(first)]
    if budget_bytes is None:
        return [first + never]
    groups, current, size = [], [], 0.0
    for name in first:
        need = nbytes[name] * samples
        if current and size + need > budget_bytes:
            groups.append(current)
            current, size = [], 0.0
        current.append(name)
        size += need
    groups.append(current + never)
    return [g for g in groups if g]
