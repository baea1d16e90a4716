"""PTQHook with mmengine's Runner and mim, and DDP calibration."""
import glob
import os.path as osp
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.runner import Runner

from ris_plugins.quantization import (all_gather_caches, calibrate,
                                      quant_state_dict, quantize_model)

from ..conftest import ROOT, tiny_cfg
from ..test_quantization.test_ptq_framework import batch, qcfg, run
from ..test_models.test_lavt import tiny_lavt
from .test_mim_demo import _mim

QUANT = osp.join(ROOT, 'configs', '_base_', 'quantization')


@pytest.fixture(scope='module')
def trained(refshapes_root, tmp_path_factory):
    """A tiny baseline trained 2 iterations: (config, checkpoint)."""
    work = str(tmp_path_factory.mktemp('fp'))
    cfg = tiny_cfg(refshapes_root, work, max_iters=2)
    Runner.from_cfg(cfg).train()
    return cfg, osp.join(work, 'iter_2.pth')


def ptq_cfg(trained, work_dir, method='ptq4ris', bits='w4a4', steps=4):
    """The tiny config + a quantization method base + a bits base."""
    cfg, ckpt = trained
    cfg = cfg.copy()
    quant = Config.fromfile(osp.join(QUANT, f'{method}.py'))
    cfg.merge_from_dict(Config.fromfile(osp.join(QUANT, f'{bits}.py')))
    cfg.custom_hooks = quant.custom_hooks
    cfg.custom_hooks[0].calibrate_steps = steps
    if cfg.custom_hooks[0].get('search'):
        cfg.custom_hooks[0].search.rows = 128
    cfg.work_dir, cfg.load_from = work_dir, ckpt
    return cfg


def test_mim_test_w4a4_then_reload_skips_calibration(trained, tmp_path):
    work = str(tmp_path / 'w4a4')
    cfg = ptq_cfg(trained, work)
    cfg_path = str(tmp_path / 'tiny_ptq4ris_w4a4.py')
    cfg.dump(cfg_path)
    log = _mim('test', 'mmseg', cfg_path, '--checkpoint', cfg.load_from,
               '--work-dir', work, cwd=ROOT)
    assert 'PTQ collect: 4/4 samples' in log
    assert 'PTQ report: W4A4' in log and 'mIoU' in log
    assert osp.isfile(osp.join(work, 'ptq_params.pth'))
    report = open(osp.join(work, 'ptq_report.txt')).read()
    assert 'kept FP by rule (1)' in report  # the classifier
    params = torch.load(osp.join(work, 'ptq_params.pth'), weights_only=True)
    bands = [k for k in params['state_dict'] if k.endswith('.thresholds')]
    assert bands and all(k.startswith('text_encoder.') for k in bands)

    first = Runner.from_cfg(ptq_cfg(trained, work))
    first.test()
    again = Runner.from_cfg(ptq_cfg(trained, work))
    again.test()
    data = batch()
    assert torch.equal(run(first.model, data), run(again.model, data))
    logs = glob.glob(osp.join(work, '*', '*.log'))
    assert sum('reloaded calibrated parameters' in open(f).read()
               for f in logs) == 2


def test_quantized_outputs_differ_from_fp_and_by_bits(trained, tmp_path):
    cfg, ckpt = trained
    fp = Runner.from_cfg(cfg.copy())
    fp.load_checkpoint(ckpt)
    data = batch()
    fp_out = run(fp.model.eval(), data)
    errors = {}
    for bits in ('w8a8', 'w4a4'):
        runner = Runner.from_cfg(ptq_cfg(trained, str(tmp_path / bits),
                                         'minmax', bits))
        runner.test()
        errors[bits] = (run(runner.model, data) - fp_out).abs().mean()
    assert 0 < errors['w8a8'] < errors['w4a4']


def test_calibration_set_too_small_leaves_fp_model(trained, tmp_path):
    cfg = ptq_cfg(trained, str(tmp_path / 'small'), 'minmax', steps=10**6)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r'has \d+ samples, fewer than '
                       r'calibrate_steps=1000000'):
        runner.test()
    assert not any('Quant' in type(m).__name__
                   for m in runner.model.modules())


def test_missing_bits_is_a_clear_error(trained, tmp_path):
    cfg = ptq_cfg(trained, str(tmp_path / 'nobits'), 'minmax')
    cfg.pop('quant_bits')
    with pytest.raises(ValueError, match=r'w_bits is set neither in '
                       r"quant_cfg nor in the config's quant_bits"):
        Runner.from_cfg(cfg).test()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}',
                            rank=rank, world_size=world)
    torch.manual_seed(0)
    model, data = tiny_lavt(), batch(4)
    state = quantize_model(model, qcfg(4))
    imgs, samples = data
    calibrate(state, lambda i: run(model, (imgs[i:i + 1], samples[i:i + 1])),
              range(rank, 4, world), search=dict(rounds=1, rows=64),
              gather=all_gather_caches)
    if rank == 0:
        torch.save(quant_state_dict(state), out)
    dist.destroy_process_group()


def test_ddp_calibration_equals_single_process(tmp_path):
    out = str(tmp_path / 'ddp.pth')
    mp.spawn(_ddp_worker, args=(2, _free_port(), out), nprocs=2)
    torch.manual_seed(0)
    model, (imgs, samples) = tiny_lavt(), batch(4)
    state = quantize_model(model, qcfg(4))
    calibrate(state, lambda i: run(model, (imgs[i:i + 1], samples[i:i + 1])),
              range(4), search=dict(rounds=1, rows=64))
    single, ddp = quant_state_dict(state), torch.load(out, weights_only=True)
    assert single.keys() == ddp.keys() and len(single) > 100
    for key in single:
        torch.testing.assert_close(ddp[key], single[key], rtol=1e-6,
                                   atol=0, equal_nan=True, msg=key)
