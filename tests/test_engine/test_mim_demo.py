"""`mim train` then `mim test` on a tiny config, as a user runs them."""
import glob
import json
import os.path as osp

import pytest

from ..conftest import ROOT, run_mim, tiny_cfg


@pytest.mark.slow
def test_mim_train_then_test(refshapes_root, tmp_path):
    work = str(tmp_path / 'work')
    cfg = tiny_cfg(refshapes_root, work, max_iters=6)
    cfg.train_dataloader.dataset.indices = 24
    cfg_path = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_path)
    log = run_mim('train', 'mmseg', cfg_path, '--work-dir', work, cwd=ROOT)
    assert 'RefSegmentor:' in log  # parameter-count line
    losses = [json.loads(line)['loss'] for line in open(
        glob.glob(osp.join(work, '*', 'vis_data', 'scalars.json'))[0])
        if '"loss"' in line]
    assert len(losses) == 6
    ckpt = osp.join(work, 'iter_6.pth')
    log = run_mim('test', 'mmseg', cfg_path, '--checkpoint', ckpt,
                  '--work-dir', work, cwd=ROOT)
    assert 'Load checkpoint from' in log and 'RefSegMetric over 8' in log
