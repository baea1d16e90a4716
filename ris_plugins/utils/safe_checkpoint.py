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
   separated list of files), and each such load is logged as a warning;
4. replaces every other scheme mmengine 0.10.7 registers (``http(s)://``,
   ``torchvision://``/``modelzoo://``, ``open-mmlab://``/``openmmlab://``,
   ``mmcls://``, ``pavi://``, ``s3://``/``petrel://``), whose loaders call
   ``torch.load`` (or ``torch.hub.load_state_dict_from_url``, whose default
   is ``weights_only=False``) without ``weights_only``: remote files are
   downloaded into torch hub's cache and then loaded like local files.

Every load in the package and its tools goes through :func:`safe_torch_load`,
which passes ``weights_only=True`` explicitly (so torch's own escape hatch
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it off), refuses to run while
that switch is set unless the file is trusted, and names the file in every
error (missing, truncated, zero-byte or refused).
"""
import io
import os
import os.path as osp
import pickle
import tempfile
from typing import IO, Any, Callable, List, Optional, Sequence, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import barrier, get_dist_info
from mmengine.fileio import get_file_backend
from mmengine.logging import HistoryBuffer, print_log
from mmengine.runner.checkpoint import (CheckpointLoader, _get_mmengine_home,
                                        _process_mmcls_checkpoint,
                                        get_deprecated_model_names,
                                        get_external_models,
                                        get_mmcls_models,
                                        get_torchvision_models)

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
    return _weights_only_load(filename, repr(filename), map_location,
                              allowed_globals, osp.getsize(filename))


def _weights_only_load(source: Union[str, IO[bytes]], name: str,
                       map_location: Optional[Union[str, Callable]],
                       allowed_globals: Sequence[Any], size: int) -> Any:
    """``torch.load(source, weights_only=True)``; errors name ``name``."""
    try:
        with torch.serialization.safe_globals(list(allowed_globals)):
            return torch.load(
                source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise pickle.UnpicklingError(
            f'Refused to load {name} with weights_only=True: {err}') from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise RuntimeError(
            f'cannot read checkpoint file {name} ({size} bytes; truncated or '
            f'not written by torch.save?): {type(err).__name__}: {err}'
        ) from err


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


def _refuse_if_forced(name: str) -> None:
    """Refuse a remote load while ``$TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is
    set (only local files can be listed as trusted)."""
    if _force_unsafe_set():
        raise RuntimeError(
            f'refusing to load {name}: ${FORCE_UNSAFE_ENV} is set, which '
            'makes torch unpickle arbitrary code wherever a loader omits '
            'weights_only. Unset it, or download the file and list its '
            f'local path in ${TRUSTED_ENV} if you trust it.')


def download_checkpoint(url: str, model_dir: Optional[str] = None) -> str:
    """Download ``url`` into torch hub's checkpoint cache, without loading.

    The cache layout is ``torch.hub.load_state_dict_from_url``'s
    (``<torch.hub.get_dir()>/checkpoints/<basename of the URL path>``), so
    files already downloaded by mmengine or torch are reused.
    ``torch.hub.download_url_to_file`` writes to a temporary file and moves
    it into place, so an interrupted download leaves no partial file. In
    distributed runs rank 0 downloads first and the others wait.

    Args:
        url (str): ``http://`` or ``https://`` URL of a checkpoint.
        model_dir (str, optional): Cache directory. Defaults to torch hub's.

    Returns:
        str: The local path of the downloaded file.
    """
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    filename = osp.basename(urlparse(url).path)
    if not filename:
        raise ValueError(f'checkpoint URL {url!r} does not end in a file '
                         'name')
    cached = osp.join(model_dir, filename)
    rank, world_size = get_dist_info()
    for turn in (0, 1):  # rank 0 downloads, then the others
        if (rank == 0) == (turn == 0) and not osp.exists(cached):
            os.makedirs(model_dir, exist_ok=True)
            print_log(f'Downloading {url} to {cached}', logger='current')
            torch.hub.download_url_to_file(url, cached, progress=False)
        if world_size > 1 and turn == 0:
            barrier()
    return cached


def load_remote_checkpoint(url: str,
                           map_location: Optional[Union[str,
                                                        Callable]] = None):
    """Download ``url`` (:func:`download_checkpoint`) and load the cached
    file with :func:`load_local_checkpoint` (``weights_only=True``).

    Replaces mmengine's ``load_from_http``, which loads through
    ``torch.hub.load_state_dict_from_url`` with its default
    ``weights_only=False``.

    Raises:
        RuntimeError: ``$TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set, or the
            downloaded file is unreadable (the message names the cached
            file).
        pickle.UnpicklingError: The file holds a refused global (the message
            names the cached file).
    """
    _refuse_if_forced(repr(url))
    return load_local_checkpoint(download_checkpoint(url), map_location)


def _scheme_name(filename: str, table: dict, scheme: str) -> str:
    """The model name after ``scheme`` in ``filename``; KeyError listing the
    known names if the table lacks it."""
    name = filename[len(scheme):]
    if name not in table:
        raise KeyError(f'unknown checkpoint {filename!r}: {scheme} knows '
                       f'{sorted(table)[:20]} ... ({len(table)} names)')
    return name


def load_torchvision_checkpoint(filename: str, map_location=None):
    """``torchvision://<name>`` (and the deprecated ``modelzoo://<name>``):
    torchvision's ImageNet weights, loaded with
    :func:`load_remote_checkpoint`."""
    scheme = 'modelzoo://' if filename.startswith('modelzoo://') \
        else 'torchvision://'
    urls = get_torchvision_models()
    return load_remote_checkpoint(
        urls[_scheme_name(filename, urls, scheme)], map_location)


def load_openmmlab_checkpoint(filename: str, map_location=None):
    """``open-mmlab://<name>`` / ``openmmlab://<name>``: resolved with
    mmengine's model tables (``hub/openmmlab.json``, deprecated names and
    ``$MMENGINE_HOME/open_mmlab.json``), then loaded with
    :func:`load_remote_checkpoint` or :func:`load_local_checkpoint`."""
    scheme = 'open-mmlab://' if filename.startswith('open-mmlab://') \
        else 'openmmlab://'
    urls = get_external_models()
    name = filename[len(scheme):]
    name = get_deprecated_model_names().get(name, name)
    url = urls[_scheme_name(scheme + name, urls, scheme)]
    if url.startswith(('http://', 'https://')):
        return load_remote_checkpoint(url, map_location)
    return load_local_checkpoint(
        osp.join(_get_mmengine_home(), url), map_location)


def load_mmcls_checkpoint(filename: str, map_location=None):
    """``mmcls://<name>``: an mmcls model-zoo backbone, loaded with
    :func:`load_remote_checkpoint`, keeping the ``backbone.`` weights as
    mmengine does."""
    urls = get_mmcls_models()
    url = urls[_scheme_name(filename, urls, 'mmcls://')]
    return _process_mmcls_checkpoint(load_remote_checkpoint(url, map_location))


def load_pavi_checkpoint(filename: str, map_location=None):
    """``pavi://<path>``: downloaded with ``pavi.modelcloud`` into a
    temporary directory and loaded with :func:`safe_torch_load`."""
    _refuse_if_forced(repr(filename))
    try:
        from pavi import modelcloud
    except ImportError as err:
        raise ImportError(
            f'loading {filename!r} needs the pavi package') from err
    model = modelcloud.get(filename[len('pavi://'):])
    with tempfile.TemporaryDirectory() as tmp_dir:
        local = osp.join(tmp_dir, model.name)
        model.download(local)
        return safe_torch_load(local, map_location)


def load_ceph_checkpoint(filename: str, map_location=None,
                         backend: str = 'petrel'):
    """``s3://`` / ``petrel://`` (optionally ``<prefix>:s3://``): read with
    mmengine's file backend and loaded with ``weights_only=True``."""
    _refuse_if_forced(repr(filename))
    data = get_file_backend(
        filename, backend_args={'backend': backend}).get(filename)
    if not data:
        raise RuntimeError(f'checkpoint file {filename!r} is empty (0 bytes)')
    with io.BytesIO(data) as buffer:
        return _weights_only_load(buffer, repr(filename), map_location, (),
                                  len(data))


#: mmengine 0.10.7's scheme prefixes and their safe replacements.
SAFE_SCHEMES = {
    '': load_local_checkpoint,
    ('http://', 'https://'): load_remote_checkpoint,
    ('modelzoo://', 'torchvision://'): load_torchvision_checkpoint,
    ('open-mmlab://', 'openmmlab://'): load_openmmlab_checkpoint,
    'mmcls://': load_mmcls_checkpoint,
    'pavi://': load_pavi_checkpoint,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_ceph_checkpoint,
}


def install() -> None:
    """Apply the four fixes above. Idempotent; runs on ``import
    ris_plugins``.

    A scheme registered by another package (none in mmengine 0.10.7 is left)
    keeps its own loader and is named in a warning.
    """
    HistoryBuffer.__getstate__ = _history_buffer_getstate
    torch.serialization.add_safe_globals(SAFE_GLOBALS)
    for prefixes, loader in SAFE_SCHEMES.items():
        CheckpointLoader.register_scheme(
            prefixes=list(prefixes) if isinstance(prefixes, tuple) else
            prefixes, loader=loader, force=True)
    unsafe = [p for p, f in CheckpointLoader._schemes.items()
              if f.__module__ != __name__]
    if unsafe:
        print_log(
            f'checkpoint schemes {unsafe} are not handled by {__name__} and '
            'may load without weights_only=True',
            logger='current',
            level=30)
