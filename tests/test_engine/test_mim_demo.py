"""`mim train` then `mim test` on a tiny config, as a user runs them."""
import glob
import json
import os
import os.path as osp
import subprocess
import sys

import pytest

from ..conftest import ROOT, tiny_cfg


def _mim(*args, cwd):
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([mim, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_mim_train_then_test(refshapes_root, tmp_path):
    work = str(tmp_path / 'work')
    cfg = tiny_cfg(refshapes_root, work, max_iters=6)
    cfg.train_dataloader.dataset.indices = 24
    cfg_path = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_path)
    log = _mim('train', 'mmseg', cfg_path, '--work-dir', work, cwd=ROOT)
    assert 'RefSegmentor:' in log  # parameter-count line
    losses = [json.loads(line)['loss'] for line in open(
        glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))[0])
        if '"loss"' in line]
    assert len(losses) == 6
    ckpt = osp.join(work, 'iter_6.pth')
    log = _mim('test', 'mmseg', cfg_path, '--checkpoint', ckpt,
               '--work-dir', work, cwd=ROOT)
    assert 'Load checkpoint from' in log and 'RefSegMetric over 8' in log
