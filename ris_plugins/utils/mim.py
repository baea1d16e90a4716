"""Run mmseg's own command-line tools (``tools/train.py``, ``tools/test.py``)
from our ``tools/`` scripts, which ``mim train|test ris_plugins`` runs.

mim runs ``<package>/.mim/tools/<name>`` of the package named on its command
line; ours hand the same command line to the installed mmseg's copy (our
configs import ris_plugins through ``custom_imports``), so ``mim train
ris_plugins <config name>.py`` behaves exactly as ``mim train mmseg <config
path>``: same arguments, same help, same exit status. mmseg keeps two small
scripts, and so do we; only this lookup is shared.
"""
import os.path as osp
import runpy

import mmseg


def mmseg_script(name: str) -> str:
    """Path of mmseg's bundled ``tools/<name>`` (its ``.mim`` copy), e.g.
    ``'train.py'``.

    Raises:
        FileNotFoundError: This mmseg install ships no such script (the
            message names the path looked at).
    """
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', name)
    if not osp.isfile(path):
        raise FileNotFoundError(f'mmseg installation has no {path!r}; '
                                'reinstall mmsegmentation')
    return path


def run_mmseg_script(name: str) -> None:
    """Run mmseg's ``tools/<name>`` as ``__main__`` on the current
    ``sys.argv`` (so its argument parser sees our command line unchanged).

    Raises:
        FileNotFoundError: See :func:`mmseg_script`.
        SystemExit: Whatever the script exits with (e.g. ``--help``).
    """
    runpy.run_path(mmseg_script(name), run_name='__main__')
