"""Activation checkpointing helpers (the ``with_cp`` switch of our
backbones and fusion modules, as mmpretrain's Swin / ResNet blocks)."""
from typing import Callable, Iterable

import torch
import torch.nn as nn
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def needs_grad(*args) -> bool:
    """True when autograd is recording and a tensor among ``args`` (or a
    parameter the call will use, see :func:`maybe_checkpoint`) needs a
    gradient."""
    return torch.is_grad_enabled() and any(
        isinstance(a, Tensor) and a.requires_grad for a in args)


def maybe_checkpoint(fn: Callable, *args, enabled: bool,
                     params: Iterable[Tensor] = ()):
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
    """
    if enabled and torch.is_grad_enabled() and (
            needs_grad(*args) or any(p.requires_grad for p in params)):
        return checkpoint(fn, *args, use_reentrant=False)
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
