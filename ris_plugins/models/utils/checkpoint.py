"""Activation checkpointing helpers (the ``with_cp`` switch of our
backbones and fusion modules, as mmpretrain's Swin / ResNet blocks)."""
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterable, Iterator, Optional

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint


def needs_grad(*args) -> bool:
    """True when autograd is recording and a tensor among ``args`` (or a
    parameter the call will use, see :func:`maybe_checkpoint`) needs a
    gradient."""
    return torch.is_grad_enabled() and any(
        isinstance(a, Tensor) and a.requires_grad for a in args)


@contextmanager
def kept_running_stats(module: nn.Module) -> Iterator[None]:
    """Restore the running statistics (``running_mean``, ``running_var``,
    ``num_batches_tracked``) of every BatchNorm in ``module`` on exit, so
    that what runs inside does not update them.

    Used as the recomputation context of :func:`maybe_checkpoint`: a
    checkpointed block in training mode runs its forward twice (the
    second time during backward), and without this its BatchNorms would
    update their statistics twice per step (as mmpretrain's / mmcv's
    ResNet ``with_cp`` do). Restored also when the recomputation stops
    early or raises.
    """
    norms = [
        m for m in module.modules()
        if isinstance(m, _BatchNorm) and m.training and m.track_running_stats
    ]
    saved = [[b.clone() for b in (m.running_mean, m.running_var,
                                  m.num_batches_tracked) if b is not None]
             for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                live = [b for b in (m.running_mean, m.running_var,
                                    m.num_batches_tracked) if b is not None]
                for dst, src in zip(live, buffers):
                    dst.copy_(src)


def maybe_checkpoint(fn: Callable, *args, enabled: bool,
                     params: Iterable[Tensor] = (),
                     norm_module: Optional[nn.Module] = None):
    """``fn(*args)``, through non-reentrant
    ``torch.utils.checkpoint.checkpoint`` when ``enabled`` and a gradient
    is being recorded: the activations inside ``fn`` are freed after the
    forward and recomputed during backward (same RNG state, so dropout /
    drop-path masks are the same). Outputs and gradients equal the plain
    call up to float rounding.

    Skipped (plain call) when autograd is off (``torch.no_grad``, as in
    mmengine's val / test loops and inference) and when neither an input
    nor any of ``params`` requires a gradient (nothing to save). Eval mode
    alone does not switch it off: frozen towers run in eval mode while
    gradients flow through them to adapters (ETRIS, BarLeRIa).

    Args:
        fn (Callable): Module or function.
        *args: Its positional arguments.
        enabled (bool): The ``with_cp`` switch.
        params (Iterable[Tensor]): Parameters ``fn`` uses (e.g.
            ``module.parameters()``); a trainable one makes checkpointing
            worth it even when no input needs a gradient.
        norm_module (nn.Module, optional): The module(s) ``fn`` runs. When
            given, its BatchNorms' running statistics are restored after
            the recomputation (:func:`kept_running_stats`), so they are
            updated once per step, as without checkpointing.
    """
    if enabled and torch.is_grad_enabled() and (
            needs_grad(*args) or any(p.requires_grad for p in params)):
        if norm_module is None:
            return checkpoint(fn, *args, use_reentrant=False)
        return checkpoint(
            fn, *args, use_reentrant=False,
            context_fn=lambda: (nullcontext(),
                                kept_running_stats(norm_module)))
    return fn(*args)


def run_sequential(blocks: nn.Sequential, x: Tensor,
                   with_cp: bool) -> Tensor:
    """``blocks(x)``, block by block, each through
    :func:`maybe_checkpoint` (for ``nn.Sequential`` stages such as CLIP's
    ResNet layers)."""
    for block in blocks:
        x = maybe_checkpoint(block, x, enabled=with_cp,
                             params=block.parameters())
    return x
