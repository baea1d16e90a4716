"""Safe loading of mmengine checkpoints under ``torch.load(weights_only=True)``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine 0.10.7
cannot load its own checkpoints then (mmengine issue #1655): they pickle

* ``mmengine.logging.HistoryBuffer`` and numpy arrays (the message hub), and
* ``builtins.getattr``, because ``HistoryBuffer.__getstate__`` stores the
  bound statistics methods, which pickle as ``getattr(HistoryBuffer, 'min')``.

Allow-listing ``getattr`` would let a crafted checkpoint reach ``os.system``
through attribute chains, so this module instead

1. makes ``HistoryBuffer`` pickle without the statistics methods (they are
   class attributes, rebuilt by ``__setstate__``), the fix mmengine made on
   its main branch (PR #1670);
2. allow-lists exactly the data classes that remain
   (:data:`SAFE_GLOBALS`) with ``torch.serialization.add_safe_globals``;
3. registers a local-file checkpoint loader that keeps ``weights_only=True``
   and, when a checkpoint is refused, says why and how to opt in. Checkpoints
   written in the old format by a trusted source load only when their path is
   listed in the environment variable :data:`TRUSTED_ENV` (a ``os.pathsep``
   separated list of files), and each such load is logged as a warning.

Every load in the package and its tools goes through :func:`safe_torch_load`,
which passes ``weights_only=True`` explicitly (so torch's own escape hatch
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off), refuses to run while
that switch is set unless the file is trusted, and names the file in every
error (missing, truncated, zero-byte or refused).
"""
import os
import os.path as osp
import pickle
from typing import Any, Callable, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import CheckpointLoader

TRUSTED_ENV = 'RIS_TRUSTED_CHECKPOINTS'
#: torch's switch that turns ``weights_only`` off where a caller omits it.
FORCE_UNSAFE_ENV = 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'

SAFE_GLOBALS: List[Callable] = [
    HistoryBuffer,
    np.ndarray,
    np.dtype,
    np._core.multiarray._reconstruct,
    np._core.multiarray.scalar,
    # numpy >= 1.25 rebuilds dtypes as instances of these classes; only
    # the plain numeric ones occur in logged scalars and histories.
    *(type(np.dtype(t)) for t in ('bool', 'int8', 'int16', 'int32', 'int64',
                                  'uint8', 'uint16', 'uint32', 'uint64',
                                  'float16', 'float32', 'float64')),
]


def _history_buffer_getstate(self: HistoryBuffer) -> dict:
    """Pickle a HistoryBuffer as plain data (no bound-method references)."""
    return {
        k: v
        for k, v in self.__dict__.items() if k != 'statistics_methods'
    }


def trusted_checkpoints() -> List[str]:
    """Return the absolute paths listed in ``$RIS_TRUSTED_CHECKPOINTS``."""
    value = os.environ.get(TRUSTED_ENV, '')
    return [osp.abspath(p) for p in value.split(os.pathsep) if p]


def _force_unsafe_set() -> bool:
    return os.environ.get(FORCE_UNSAFE_ENV, '0').lower() in ('1', 'y', 'yes',
                                                             'true')


def _is_trusted(filename: str) -> bool:
    return osp.abspath(filename) in trusted_checkpoints()


def safe_torch_load(filename: str,
                    map_location: Optional[Union[str, Callable]] = 'cpu',
                    allowed_globals: Sequence[Any] = ()) -> Any:
    """``torch.load(filename, weights_only=True)`` with clear errors.

    Args:
        filename (str): Path of a file written by ``torch.save``.
        map_location (str | callable, optional): As in ``torch.load``.
            Defaults to ``'cpu'``.
        allowed_globals (sequence): Extra classes allowed for this load only
            (``torch.serialization.safe_globals``), e.g. exactly
            ``argparse.Namespace`` for LAVT's training checkpoints.

    Returns:
        Any: The loaded object.

    Raises:
        FileNotFoundError: ``filename`` does not exist.
        RuntimeError: ``$TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set and the
            file is not listed in ``$RIS_TRUSTED_CHECKPOINTS``, or the file
            is empty, truncated or not a torch file. The message names the
            file.
        pickle.UnpicklingError: The file holds a global outside the
            allow-list (the message names the file and the global).
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint file {filename!r} does not exist')
    if _force_unsafe_set() and not _is_trusted(filename):
        raise RuntimeError(
            f'refusing to load {filename!r}: ${FORCE_UNSAFE_ENV} is set, '
            'which makes torch unpickle arbitrary code wherever a loader '
            'omits weights_only. Unset it (ris_plugins loads mmengine '
            'checkpoints safely without it), or list this file in '
            f'${TRUSTED_ENV} if you trust it.')
    if osp.getsize(filename) == 0:
        raise RuntimeError(f'checkpoint file {filename!r} is empty (0 bytes)')
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(
                filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f'Refused to load {filename!r} with weights_only=True: '
            f'{err}') from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise RuntimeError(
            f'cannot read checkpoint file {filename!r} '
            f'({osp.getsize(filename)} bytes; truncated or not written by '
            f'torch.save?): {type(err).__name__}: {err}') from err


def load_local_checkpoint(filename: str,
                          map_location: Optional[Union[str,
                                                       Callable]] = None):
    """Load a local checkpoint with :func:`safe_torch_load`.

    Replaces mmengine's ``load_from_local`` (prefix ``''``), so ``load_from``,
    ``resume``, ``mim test --checkpoint`` and ``load_checkpoint`` all use it.

    Args:
        filename (str): Path of the checkpoint file.
        map_location (str | callable, optional): As in ``torch.load``.

    Returns:
        dict | OrderedDict: The loaded checkpoint.

    Raises:
        FileNotFoundError: ``filename`` does not exist.
        RuntimeError: See :func:`safe_torch_load`.
        pickle.UnpicklingError: The checkpoint holds objects outside the
            allow-list and its path is not listed in
            ``$RIS_TRUSTED_CHECKPOINTS``. The message names the file and the
            refused global.
    """
    try:
        return safe_torch_load(filename, map_location)
    except pickle.UnpicklingError as err:
        if not _is_trusted(filename):
            raise pickle.UnpicklingError(
                f'{err}\nIf this checkpoint comes from a source you trust '
                '(e.g. it was written by mmengine 0.10.7 before ris_plugins '
                'was imported), list its path in the environment variable '
                f'{TRUSTED_ENV} to load it with full unpickling.') from err
    print_log(
        f'Loading {filename!r} with weights_only=False because it is listed '
        f'in ${TRUSTED_ENV}. Only do this for checkpoints you trust.',
        logger='current',
        level=30)
    return torch.load(filename, map_location=map_location, weights_only=False)


def install() -> None:
    """Apply the three fixes above. Idempotent; runs on ``import
    ris_plugins``."""
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    torch.serialization.add_safe_globals(SAFE_GLOBALS)
    CheckpointLoader.register_scheme(
        prefixes='', loader=load_local_checkpoint, force=True)
