"""Each demo method (baseline, LAVT-small, CRIS-small) trains through the
mmengine Runner on generated RefShapes (the loss falls while it fits two
samples), saves a checkpoint, and `mim test` evaluates that checkpoint."""
import glob
import os.path as osp

import pytest
from mmengine.runner import Runner

from ..conftest import ROOT, run_cfg, run_mim

DEMOS = sorted(glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')))


@pytest.mark.slow
@pytest.mark.parametrize('config', DEMOS, ids=osp.basename)
def test_method_trains_and_mim_tests(config, refshapes_root, tmp_path):
    work = str(tmp_path / 'work')
    cfg = run_cfg(config, refshapes_root, work, max_iters=12, batch_size=2)
    train = cfg.train_dataloader.dataset
    train.update(indices=2, sentence_mode='first')
    train.pipeline = [t for t in train.pipeline
                      if t.type != 'RefRandomFlip']
    cfg.optim_wrapper.optimizer.lr = 1e-3
    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 12
    assert losses[-3:].mean() < 0.9 * losses[:3].mean(), losses
    cfg_path = str(tmp_path / 'cfg.py')
    cfg.dump(cfg_path)
    log = run_mim('test', 'mmseg', cfg_path, '--checkpoint',
                  osp.join(work, 'iter_12.pth'), '--work-dir', work, cwd=ROOT)
    assert 'RefSegMetric over 8 samples' in log
