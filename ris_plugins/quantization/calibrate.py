"""Calibration orchestration: cache FP layer inputs, initialise every
quantizer from them, then search (see :mod:`.cache` and :mod:`.search`).

Cost: one forward of the model per calibration sample (layer inputs
sub-sampled to ``max_rows`` rows per sample), then local searches that
re-evaluate only the layer itself.  This replaces PTQ4ViT / PTQ4RIS's
Stage A (``hahnyuan/PTQ4ViT: utils/calibrator.py``
``HessianQuantCalibrator``), which runs a full forward+backward of the
model per layer and per sample (~4.7k passes for LAVT, ``ptq4ris.md``
§12).

Streaming (``max_cache_mb``): holding every layer's cached inputs at once
costs ~12 GB for full-size LAVT at W4A4 with 32 samples.  Instead, a probe
forward of one sample records the order in which the quantized layers run
and the size of their caches; the layers are cut into groups, contiguous
in that order, whose caches fit the budget; then, group by group, the FP
model runs every sample again only until the group's last layer has run
(the prefix is recomputed, the rest of the forward skipped), the group is
calibrated, and its caches are freed.  Every quantizer stays disabled
during the passes, so each group sees exactly the FP inputs of the
one-pass calibration and the parameters are identical bit for bit; the
price is the recomputed prefixes (about (G + 1) / 2 forwards per sample
for G groups instead of 1).
"""
import time
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
from mmengine.dataset import pseudo_collate
from mmengine.dist import all_gather_object, get_dist_info
from mmengine.logging import print_log
from torch import Tensor

from .cache import (CallProbe, InputCache, all_gather_caches, plan_groups,
                    release_free_memory)
from .quantize import QuantState
from .search import operands, search_layer, search_subset


class _StopForward(Exception):
    """Raised by a hook to end a forward once a group's layers have run."""


def calibrate(state: QuantState,
              run_sample: Callable[[int], None],
              positions: Iterable[int],
              max_rows: int = 256,
              search: Optional[dict] = None,
              gather: Optional[Callable] = None,
              log_interval: int = 8,
              max_cache_mb: Optional[float] = None) -> Dict[str, float]:
    """Calibrate every quantizer of ``state`` and enable them.

    Args:
        run_sample: runs the FP model on the calibration sample at a
            position (the caller chooses data and batching).  With
            ``max_cache_mb`` it is called once per group and may be ended
            early by an exception raised from a layer hook (it must not
            catch exceptions).
        positions: the sample positions this process runs.
        max_rows: rows cached per layer and call (see
            :func:`~.cache.subsample`).
        search: ``None`` (initialisation only: the quantizers' observers)
            or ``dict(rounds=1, rows=1024)``: output-aware search on at
            most ``rows`` cached rows per layer (optional ``chunk_elems``,
            default 2**24: elements of one batched candidate evaluation,
            a memory bound that does not change the result).
        gather: merges ``{layer: [(position, inputs)]}`` across processes
            (DDP); every process then computes the same parameters.
        max_cache_mb: bound (MiB) of the cached layer inputs held at once
            (see the module doc); None = one pass, every layer's inputs
            held at once.  The parameters do not depend on it.  Assumes
            every sample calls the quantized layers in the same order
            (no data-dependent control flow).

    Returns:
        dict: seconds spent per stage ('collect', 'init', 'search') and
        'groups', the number of layer groups.

    Raises:
        ValueError: no positions to run and no ``gather`` (0 calibration
            samples), or ``max_cache_mb`` not positive.
        FloatingPointError: NaN or Inf in a calibration input.
        RuntimeError: a quantized layer never ran during calibration.
    """
    positions = list(positions)
    if not positions and gather is None:
        raise ValueError('calibrate: no calibration samples (positions is '
                         'empty); calibration needs at least one')
    if max_cache_mb is not None and not max_cache_mb > 0:
        raise ValueError(f'calibrate: max_cache_mb must be > 0 or None, got '
                         f'{max_cache_mb!r}')
    times = dict(collect=0.0, init=0.0, search=0.0)
    if max_cache_mb is None:
        groups = [list(state.layers)]
    else:
        tick = time.perf_counter()
        groups, calls = _plan(state, run_sample, positions, max_rows,
                              max_cache_mb * 2**20, gather is not None)
        times['collect'] += time.perf_counter() - tick
    times['groups'] = len(groups)
    done = 0
    for g, names in enumerate(groups):
        layers = {n: state.layers[n] for n in names}
        # the last group's passes run to the end of the forward
        stop = None if g == len(groups) - 1 else calls
        tick = time.perf_counter()
        caches = _collect(layers, run_sample, positions, max_rows, stop,
                          log_interval, f' (group {g + 1}/{len(groups)})'
                          if len(groups) > 1 else '')
        if gather is not None:
            caches.caches = gather(caches.caches)
        times['collect'] += time.perf_counter() - tick
        for name, layer in layers.items():
            inputs = caches.merged(name)
            caches.caches[name] = None  # free as we go
            _calibrate_layer(layer, inputs, search, times)
            del inputs
            release_free_memory()
            done += 1
            if done % (log_interval * 4) == 0:
                print_log(f'PTQ calibrate: {done}/{len(state.layers)} '
                          'layers', logger='current')
        if len(groups) > 1:  # the next passes run the FP prefix
            for layer in layers.values():
                for q in layer.quantizers().values():
                    q.enabled = False
    for _, q in state.quantizers():
        q.enabled = True
    return times


class _StopAfter:
    """Pre-hooks ending a forward (:class:`_StopForward`) once every layer
    of a group has been called as often as in the probe pass.  Register
    them after the cache's hooks, which must record the last call first.
    """

    def __init__(self, layers: Dict[str, nn.Module], calls: Dict[str, int]):
        self.needed = {n: calls.get(n, 0) for n in layers}
        self.counts: Dict[str, int] = {}
        self._handles = [
            layer.register_forward_pre_hook(self._hook(name))
            for name, layer in layers.items()]

    def reset(self) -> None:
        self.counts = {n: 0 for n in self.needed}

    def _hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            self.counts[name] += 1
            if all(self.counts[n] >= k for n, k in self.needed.items()):
                raise _StopForward
        return hook

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def _plan(state: QuantState, run_sample: Callable[[int], None],
          positions: List[int], max_rows: int, budget: float,
          distributed: bool) -> tuple:
    """Probe one sample and cut the layers into groups (see
    :func:`~.cache.plan_groups`).  Under DDP the first process with a
    sample decides, so every process gets the same groups.

    Returns:
        tuple: (groups, calls per layer in one forward).
    """
    probe = CallProbe(state.layers, max_rows)
    try:
        with torch.no_grad():
            if positions:
                run_sample(positions[0])
    finally:
        probe.remove()
    found = (probe.order, probe.nbytes, len(positions))
    reports = all_gather_object(found) if distributed else [found]
    order, nbytes = next(((o, b) for o, b, n in reports if n), found[:2])
    samples = sum(n for _, _, n in reports)
    calls: Dict[str, int] = {}
    for name in order:
        calls[name] = calls.get(name, 0) + 1
    return plan_groups(order, nbytes, samples, budget), calls


def _collect(layers: Dict[str, nn.Module], run_sample: Callable[[int], None],
             positions: List[int], max_rows: int,
             stop_calls: Optional[Dict[str, int]], log_interval: int,
             label: str) -> InputCache:
    """Run every sample caching the inputs of ``layers``, each forward
    ended once they have all run ``stop_calls`` times (None: to the end);
    the hooks are removed before returning."""
    cache = InputCache(layers, max_rows)  # registered first: runs first
    stop = None if stop_calls is None else _StopAfter(layers, stop_calls)
    try:
        with torch.no_grad():
            for i, pos in enumerate(positions):
                cache.position = pos
                if stop is not None:
                    stop.reset()
                try:
                    run_sample(pos)
                except _StopForward:
                    pass
                release_free_memory()
                if (i + 1) % log_interval == 0 or i + 1 == len(positions):
                    print_log(f'PTQ collect{label}: {i + 1}/'
                              f'{len(positions)} samples', logger='current')
    finally:
        cache.remove()
        if stop is not None:
            stop.remove()
    return cache


def _calibrate_layer(layer: nn.Module, inputs: List[Tensor],
                     search: Optional[dict], times: dict) -> None:
    """Initialise, enable and (optionally) search one layer's quantizers on
    its cached FP inputs; adds the seconds to ``times``."""
    kind = layer.KIND
    tick = time.perf_counter()
    _init_layer(layer, kind, inputs)
    times['init'] += time.perf_counter() - tick
    if search:
        tick = time.perf_counter()
        with torch.no_grad():
            search_layer(layer, kind,
                         search_subset(kind, inputs, search.get('rows', 1024)),
                         search.get('rounds', 1),
                         search.get('chunk_elems', 2**24))
        times['search'] += time.perf_counter() - tick


def _init_layer(layer: nn.Module, kind: str, inputs: List[Tensor]) -> None:
    """Initialise (observers) and enable the quantizers of one layer from
    its cached FP inputs."""
    fp = dict(zip(operands(kind), inputs))
    if kind != 'MatMul':
        fp['w_quantizer'] = layer.weight.detach()
    for child, q in layer.quantizers().items():
        q.init_params(fp[child])
        q.enabled = True


def calibration_indices(size: int, steps: int, seed: int = 0) -> List[int]:
    """The dataset indices :func:`calibrate_on_dataset` calibrates on: the
    first ``steps`` of a permutation of ``range(size)`` seeded by ``seed``
    (``torch.randperm`` with a ``torch.Generator``)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(size, generator=gen)[:steps].tolist()


def calibrate_on_dataset(state: QuantState, model: nn.Module, dataset,
                         steps: int = 32, seed: int = 0, max_rows: int = 256,
                         search: Optional[dict] = None,
                         max_cache_mb: Optional[float] = 2048) -> dict:
    """Calibrate ``state`` (from :func:`~.quantize.quantize_model` on
    ``model``) on ``steps`` samples of ``dataset`` chosen by a seeded
    permutation, one sample per forward (through the model's data
    preprocessor, ``mode='tensor'``).  Under DDP each rank runs every
    world-th sample and the cached inputs are all-gathered, so every rank
    ends with the single-process parameters.  ``max_cache_mb`` bounds the
    cached inputs held at once (see :func:`calibrate`).

    Returns:
        dict: seconds per stage ('collect', 'init', 'search', 'total') and
        the number of layer groups ('groups').

    Raises:
        ValueError: ``steps`` not a positive int, or a dataset with fewer
            than ``steps`` samples (0 included).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f'calibrate_steps must be a positive int, got '
                         f'{steps!r}')
    if len(dataset) < steps:
        raise ValueError(f'the calibration set ({type(dataset).__name__}) '
                         f'has {len(dataset)} samples, fewer than '
                         f'calibrate_steps={steps}')
    indices = calibration_indices(len(dataset), steps, seed)
    rank, world = get_dist_info()

    def run_sample(pos: int) -> None:
        data = model.data_preprocessor(
            pseudo_collate([dataset[indices[pos]]]), False)
        model(**data, mode='tensor')

    start = time.perf_counter()
    times = calibrate(state, run_sample, range(rank, len(indices), world),
                      max_rows=max_rows, search=search,
                      gather=all_gather_caches if world > 1 else None,
                      max_cache_mb=max_cache_mb)
    times['total'] = time.perf_counter() - start
    return times
