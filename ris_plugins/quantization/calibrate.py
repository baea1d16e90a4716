"""Calibration orchestration: cache FP layer inputs, initialise every
quantizer from them, then search (see :mod:`.cache` and :mod:`.search`).

Cost: one forward of the model per calibration sample (layer inputs
sub-sampled to ``max_rows`` rows per sample), then local searches that
re-evaluate only the layer itself.  This replaces PTQ4ViT / PTQ4RIS's
Stage A (``hahnyuan/PTQ4ViT: utils/calibrator.py``
``HessianQuantCalibrator``), which runs a full forward+backward of the
model per layer and per sample (~4.7k passes for LAVT, ``ptq4ris.md``
§12).
"""
import time
from typing import Callable, Dict, Iterable, List, Optional

import torch
import torch.nn as nn
from mmengine.dataset import pseudo_collate
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from torch import Tensor

from .cache import InputCache, all_gather_caches
from .quantize import QuantState
from .search import operands, search_layer, search_subset


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
        max_rows: rows cached per layer and call (see
            :func:`~.cache.subsample`).
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
    cache = InputCache(state.layers, max_rows)
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
    """Initialise (observers) and enable the quantizers of one layer from
    its cached FP inputs."""
    fp = dict(zip(operands(kind), inputs))
    if kind != 'MatMul':
        fp['w_quantizer'] = layer.weight.detach()
    for child, q in layer.quantizers().items():
        q.init_params(fp[child])
        q.enabled = True


def calibrate_on_dataset(state: QuantState, model: nn.Module, dataset,
                         steps: int = 32, seed: int = 0, max_rows: int = 256,
                         search: Optional[dict] = None) -> dict:
    """Calibrate ``state`` (from :func:`~.quantize.quantize_model` on
    ``model``) on ``steps`` samples of ``dataset`` chosen by a seeded
    permutation, one sample per forward (through the model's data
    preprocessor, ``mode='tensor'``).  Under DDP each rank runs every
    world-th sample and the cached inputs are all-gathered, so every rank
    ends with the single-process parameters.

    Returns:
        dict: seconds per stage ('collect', 'init', 'search', 'total').

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
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=gen)[:steps].tolist()
    rank, world = get_dist_info()

    def run_sample(pos: int) -> None:
        data = model.data_preprocessor(
            pseudo_collate([dataset[indices[pos]]]), False)
        model(**data, mode='tensor')

    start = time.perf_counter()
    times = calibrate(state, run_sample, range(rank, len(indices), world),
                      max_rows=max_rows, search=search,
                      gather=all_gather_caches if world > 1 else None)
    times['total'] = time.perf_counter() - start
    return times
