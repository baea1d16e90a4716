"""ris_plugins.utils.mim: our tools/train.py and tools/test.py hand their
command line to mmseg's own scripts."""
import os.path as osp
import runpy
import sys

import mmseg
import pytest

from ris_plugins.utils.mim import mmseg_script, run_mmseg_script

from ..conftest import ROOT


def test_mmseg_script_is_the_installed_copy():
    want = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools',
                    'train.py')
    assert mmseg_script('train.py') == want and osp.isfile(want)


def test_missing_script_is_named():
    with pytest.raises(FileNotFoundError,
                       match=r"mmseg installation has no '.*\.mim/tools/"
                       r"no_such\.py'; reinstall mmsegmentation"):
        run_mmseg_script('no_such.py')


def _help(path: str, monkeypatch, capsys) -> str:
    """What ``python <path> --help`` prints (run in this process)."""
    monkeypatch.setattr(sys, 'argv', ['prog.py', '--help'])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(path, run_name='__main__')
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize('name', ['train.py', 'test.py'])
def test_tool_has_mmseg_command_line(name, monkeypatch, capsys):
    """tools/<name> --help prints exactly mmseg's tools/<name> --help: the
    same arguments, reached through our script."""
    ours = _help(osp.join(ROOT, 'tools', name), monkeypatch, capsys)
    theirs = _help(mmseg_script(name), monkeypatch, capsys)
    assert ours == theirs
    assert '--work-dir' in ours and ('--resume' in ours) == (
        name == 'train.py')
