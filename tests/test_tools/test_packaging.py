"""Configs and tools ship inside the package (ris_plugins/.mim), so mim
finds them in an installed wheel."""
import os
import os.path as osp
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS

from ..conftest import DEMO_CFG, ROOT

MIM = osp.join(ROOT, 'ris_plugins', '.mim')


def test_mim_folder_points_at_configs_and_tools():
    """The editable install / clone: .mim/{configs,tools} are the
    repository's folders (symlinks), not stale copies."""
    assert osp.realpath(osp.join(MIM, 'configs')) == osp.join(ROOT,
                                                              'configs')
    assert osp.realpath(osp.join(MIM, 'tools')) == osp.join(ROOT, 'tools')
    rel = osp.relpath(DEMO_CFG, osp.join(ROOT, 'configs'))
    assert osp.samefile(osp.join(MIM, 'configs', rel), DEMO_CFG)
    for tool in ('image_demo.py', 'train.py', 'test.py',
                 'analysis_tools/benchmark.py',
                 'analysis_tools/get_flops.py'):
        assert osp.isfile(osp.join(MIM, 'tools', tool)), tool


def _copy_tree(dst: str) -> str:
    """The working tree without the environment and outputs."""
    return shutil.copytree(
        ROOT, dst, symlinks=True,
        ignore=shutil.ignore_patterns('.venv', '.git', 'work_dirs', 'data',
                                      'build', '*.egg-info', '__pycache__',
                                      '.pytest_cache'))


@pytest.mark.slow
def test_wheel_ships_configs_and_tools_for_mim(tmp_path):
    """Build a wheel from a copy of the tree, install it into a throwaway
    venv that sees this venv's dependencies (not its editable
    ris_plugins), then: the wheel holds copies of every config and tool;
    a config name resolves inside the installed package; ``mim run
    ris_plugins image_demo`` runs from an unrelated folder."""
    src = _copy_tree(str(tmp_path / 'src'))
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps',
                    '--no-build-isolation', '-q', src, '-w',
                    str(tmp_path / 'dist')], check=True, timeout=600)
    (wheel, ) = os.listdir(tmp_path / 'dist')
    names = set(zipfile.ZipFile(tmp_path / 'dist' / wheel).namelist())
    for folder in ('configs', 'tools'):
        for base, _, files in os.walk(osp.join(ROOT, folder)):
            for f in files:
                if f.endswith('.py') and '__pycache__' not in base:
                    rel = osp.relpath(osp.join(base, f), ROOT)
                    assert f'ris_plugins/.mim/{rel}' in names, rel
    venv = str(tmp_path / 'venv')
    subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages',
                    '--without-pip', venv], check=True)
    py = osp.join(venv, 'bin', 'python')
    site = subprocess.check_output(
        [py, '-c', 'import sysconfig; print(sysconfig.get_paths()'
         "['purelib'])"], text=True).strip()
    # a plain path line: this venv's packages, without running its .pth
    # files (so the editable finder of ris_plugins stays out)
    with open(osp.join(site, 'deps.pth'), 'w') as f:
        f.write(sysconfig.get_paths()['purelib'] + '\n')
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps',
                    '-q', '--target', site,
                    str(tmp_path / 'dist' / wheel)], check=True, timeout=600)
    work = tmp_path / 'elsewhere'
    work.mkdir()
    where = subprocess.check_output(
        [py, '-c', 'import ris_plugins.apis as a; print(a.__file__); '
         "print(a.find_config('ris-baseline_r18-minilm_1xb16-2k_"
         "refshapes-160x160'))"], cwd=str(work), text=True).split()
    assert where[0].startswith(site) and where[1].startswith(
        osp.join(site, 'ris_plugins', '.mim', 'configs'))
    img = str(work / 'img.png')
    cv2.imwrite(img, np.full((40, 50, 3), 90, np.uint8))
    cfg = where[1]
    proc = subprocess.run(
        [py, '-c', 'from mim.cli import cli; cli()', 'run', 'ris_plugins',
         'image_demo', img, osp.basename(cfg)[:-3], 'none.pth', '--text',
         'the red circle'], cwd=str(work), capture_output=True, text=True,
        timeout=600)
    # the script ran from the wheel and reported the missing checkpoint
    assert osp.join(site, 'ris_plugins', '.mim', 'tools',
                    'image_demo.py') in proc.stdout, proc.stderr[-2000:]
    assert "error: " in proc.stderr and 'none.pth' in proc.stderr
    ckpt = str(work / 'w.pth')
    torch.save({'state_dict': MODELS.build(
        Config.fromfile(DEMO_CFG).model).state_dict()}, ckpt)
    proc = subprocess.run(
        [py, '-c', 'from mim.cli import cli; cli()', 'run', 'ris_plugins',
         'image_demo', img, osp.basename(cfg)[:-3], ckpt, '--text',
         'the red circle', '--out-file', 'o.png'], cwd=str(work),
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'pixels' in proc.stdout and osp.isfile(work / 'o.png')
