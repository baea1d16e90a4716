"""``mim train ris_plugins CONFIG ...``: mmseg's tools/train.py on our configs.

mim runs ``<package>/.mim/tools/train.py`` of the package named on its command
line; this script hands the same arguments to the installed mmseg's
``train.py`` (our configs import ris_plugins through ``custom_imports``), so
``mim train ris_plugins <config name>.py`` works from an installed wheel and
behaves exactly as ``mim train mmseg <config path>``.
"""
import os.path as osp
import runpy

import mmseg


def mmseg_script(name: str) -> str:
    """Path of mmseg's bundled ``tools/<name>`` (its ``.mim`` copy).

    Raises:
        FileNotFoundError: This mmseg install ships no such script.
    """
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', name)
    if not osp.isfile(path):
        raise FileNotFoundError(f'mmseg installation has no {path!r}; '
                                'reinstall mmsegmentation')
    return path


if __name__ == '__main__':
    runpy.run_path(mmseg_script('train.py'), run_name='__main__')
