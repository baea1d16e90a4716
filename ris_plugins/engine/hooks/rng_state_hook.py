"""Save and restore the random number generators with the checkpoint, so
that ``--resume`` continues the interrupted run exactly."""
import random
from typing import Callable, Optional

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop
from mmseg.registry import HOOKS

#: Checkpoint key of the saved states.
RNG_KEY = 'rng_state'


def get_rng_state() -> dict:
    """The torch (CPU and current CUDA device), numpy and Python ``random``
    states, in a form that loads with ``torch.load(weights_only=True)``.

    Returns:
        dict: ``torch`` (uint8 tensor), ``cuda`` (uint8 tensor, only when
        CUDA is available), ``numpy`` (dict: ``algorithm`` str, ``keys``
        int64 tensor of shape (624,), ``pos``/``has_gauss`` int,
        ``cached_gaussian`` float: ``np.random.get_state()``'s fields) and
        ``random`` (``random.getstate()``: int, tuple of 625 ints, float or
        None).
    """
    algorithm, keys, pos, has_gauss, cached = np.random.get_state()
    state = dict(
        torch=torch.get_rng_state(),
        numpy=dict(
            algorithm=str(algorithm),
            keys=torch.from_numpy(keys.astype(np.int64)),
            pos=int(pos),
            has_gauss=int(has_gauss),
            cached_gaussian=float(cached)),
        random=random.getstate())
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states saved by :func:`get_rng_state`.

    The CUDA state is restored to the current device when CUDA is available
    and the state has one.
    """
    torch.set_rng_state(state['torch'])
    np_state = state['numpy']
    np.random.set_state(
        (np_state['algorithm'], np_state['keys'].numpy().astype(np.uint32),
         np_state['pos'], np_state['has_gauss'],
         np_state['cached_gaussian']))
    version, internal, gauss = state['random']
    random.setstate((version, tuple(internal), gauss))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state['cuda'])


class _RestoreAfterSkip:
    """Wraps ``IterBasedTrainLoop.dataloader_iterator``: lets the loop's
    ``skip`` fast-forward calls through, then restores the RNG state just
    before the first new batch is fetched, and unwraps itself."""

    def __init__(self, loop, skip: int, restore: Callable[[], None]):
        self.loop, self.iterator = loop, loop.dataloader_iterator
        self.skip, self.restore = skip, restore

    def __iter__(self):
        return self

    def __next__(self):
        if self.skip == 0:
            self.restore()
            self.loop.dataloader_iterator = self.iterator
        self.skip -= 1
        return next(self.iterator)

    def __getattr__(self, name):
        return getattr(self.iterator, name)


@HOOKS.register_module()
class RNGStateHook(Hook):
    """Make ``resume`` continue the random number streams of the run.

    mmengine checkpoints keep the seed, the iteration and the optimizer, but
    not the generator states, so after ``--resume`` dropout masks and random
    augmentations differ from the uninterrupted run. This hook stores
    :func:`get_rng_state` in ``checkpoint['rng_state']`` when a checkpoint is
    saved, and on resume restores it at the point where the run was saved:
    for ``IterBasedTrainLoop`` just before the first batch after the
    loop's fast-forward over the trained batches (which re-runs the data
    pipeline), otherwise at the first ``before_train_epoch``. Validation
    during training runs between a save and the next batch, so the hook also
    saves the states before validation and restores them after it: training
    draws the same random numbers whatever the validation interval.

    Registered in ``configs/_base_/default_runtime.py`` as
    ``default_hooks.rng_state``. ``load_from`` without ``resume`` does not
    restore anything. Dataloader workers are reseeded by mmengine's
    ``worker_init_fn`` from the run's seed, and the sampler order comes from
    the seed and the fast-forward, so they need no state here; mmengine
    builds them before it reads the checkpoint's seed, so a config without
    ``randomness.seed`` gets a warning naming the seed to resume with.

    In distributed runs the checkpoint holds rank 0's states (checkpoints are
    written by rank 0); every rank restores them unless
    ``randomness.diff_rank_seed`` is set, in which case only rank 0 does.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._pending: Optional[dict] = None
        self._before_val: Optional[dict] = None

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Store the generator states (before validation, if inside it)."""
        checkpoint[RNG_KEY] = self._before_val or get_rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Keep the saved states of a resumed checkpoint for later."""
        if not runner._resume:
            return
        seed = checkpoint.get('meta', {}).get('seed')
        if runner._randomness_cfg.get('seed') is None and seed is not None \
                and seed != runner.seed:
            runner.logger.warning(
                'the config sets no randomness.seed, so the dataloaders were '
                f'built with seed {runner.seed}, not the checkpoint\'s {seed}: '
                'the sampler order and worker seeds differ from the '
                f'interrupted run. Resume with --cfg-options '
                f'randomness.seed={seed} to continue it exactly.')
        if RNG_KEY not in checkpoint:
            return
        rank, _ = get_dist_info()
        if rank != 0 and runner._randomness_cfg.get('diff_rank_seed'):
            runner.logger.warning(
                'randomness.diff_rank_seed is set: the checkpoint holds rank '
                f'0\'s RNG states only, so rank {rank} resumes from its seed')
            return
        self._pending = checkpoint[RNG_KEY]

    def before_train(self, runner) -> None:
        """Schedule the restore (after ``Runner.resume`` reseeded)."""
        if self._pending is None:
            return
        loop = runner.train_loop
        if isinstance(loop, IterBasedTrainLoop) and loop.iter > 0:
            loop.dataloader_iterator = _RestoreAfterSkip(
                loop, loop.iter, self._restore)

    def before_train_epoch(self, runner) -> None:
        """Restore now if no fast-forward follows (epoch-based loops)."""
        iterator = getattr(runner.train_loop, 'dataloader_iterator', None)
        if self._pending is not None and not isinstance(
                iterator, _RestoreAfterSkip):
            self._restore()

    def _restore(self) -> None:
        set_rng_state(self._pending)
        self._pending = None

    def before_val(self, runner) -> None:
        """Save the states so that validation does not shift training."""
        self._before_val = get_rng_state()

    def after_val(self, runner) -> None:
        """Restore the states saved in :meth:`before_val`."""
        if self._before_val is not None:
            set_rng_state(self._before_val)
            self._before_val = None
