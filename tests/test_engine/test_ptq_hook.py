"""PTQHook with mmengine's Runner and mim (settings in the config's
top-level ``ptq`` dict), and DDP calibration."""
import copy
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
                                      calibrate_on_dataset, quant_state_dict,
                                      quantize_model)
from ris_plugins.quantization.settings import parse_bits

from ..conftest import ROOT, batch, qcfg, run, run_mim, tiny_cfg, tiny_lavt

QUANT = osp.join(ROOT, 'configs', '_base_', 'quantization')


@pytest.fixture(scope='module')
def trained(refshapes_root, tmp_path_factory):
    """A tiny baseline trained 2 iterations: (config, checkpoint)."""
    work = str(tmp_path_factory.mktemp('fp'))
    cfg = tiny_cfg(refshapes_root, work, max_iters=2)
    Runner.from_cfg(cfg).train()
    return cfg, osp.join(work, 'iter_2.pth')


def ptq_cfg(trained, work_dir, method='ptq4ris', bits='w4a4', steps=4):
    """The tiny config + a quantization method base, with the bit widths
    and the calibration steps merged into its ``ptq`` dict, as a quantized
    config does (``ptq = dict(quant_cfg=dict(w_bits=4, a_bits=4))``)."""
    cfg, ckpt = trained
    cfg = cfg.copy()
    quant = Config.fromfile(osp.join(QUANT, f'{method}.py'))
    cfg.custom_hooks, cfg.ptq = quant.custom_hooks, quant.ptq
    cfg.merge_from_dict(dict(ptq=dict(quant_cfg=parse_bits(bits),
                                      calibrate_steps=steps)))
    if cfg.ptq.get('search'):
        cfg.ptq.search.rows = 128
    cfg.work_dir, cfg.load_from = work_dir, ckpt
    return cfg


@pytest.mark.slow
def test_mim_test_w4a4_then_reload_skips_calibration(trained, tmp_path):
    work = str(tmp_path / 'w4a4')
    cfg = ptq_cfg(trained, work)
    cfg_path = str(tmp_path / 'tiny_ptq4ris_w4a4.py')
    cfg.dump(cfg_path)
    log = run_mim('test', 'mmseg', cfg_path, '--checkpoint', cfg.load_from,
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
    cfg.ptq.quant_cfg.pop('w_bits')
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=(
            r'ptq.quant_cfg.w_bits is not set; set the bit widths in the '
            r'quantized config, e.g. ptq = dict\(quant_cfg=dict\(w_bits=4')):
        runner.test()
    assert not any('Quant' in type(m).__name__
                   for m in runner.model.modules())


def test_ptq_settings_merge_into_the_method_base(trained, tmp_path):
    """One top-level dict: a quantized config overrides single keys (bits,
    steps, search rows) without restating the method's quantizers."""
    cfg = ptq_cfg(trained, str(tmp_path / 'merge'), 'ptq4ris', 'w8a8')
    method = Config.fromfile(osp.join(QUANT, 'ptq4ris.py')).ptq
    assert cfg.ptq.quant_cfg.w_bits == 8 and cfg.ptq.calibrate_steps == 4
    assert cfg.ptq.search == dict(rounds=1, rows=128)
    assert cfg.ptq.quant_cfg.rules == method.quant_cfg.rules
    assert cfg.custom_hooks == [dict(type='PTQHook')]
    cfg.ptq.calibrate_stesp = 3  # a typo is named with the valid keys
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ValueError, match=r"ptq: unknown keys "
                       r"\['calibrate_stesp'\]; valid keys: \["):
        runner.test()


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
    # streamed (several layer groups) as well as distributed
    times = calibrate(state, lambda i: run(model, (imgs[i:i + 1],
                                                   samples[i:i + 1])),
                      range(rank, 4, world), search=dict(rounds=1, rows=64),
                      gather=all_gather_caches, max_cache_mb=0.1)
    assert times['groups'] > 2
    if rank == 0:
        torch.save(quant_state_dict(state), out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_calibration_equals_single_process(tmp_path):
    """2 gloo processes, streamed calibration, vs one process holding
    every cache at once."""
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


# ------------------------------------------------ stale or foreign params
def _fp_runner(cfg, ckpt):
    runner = Runner.from_cfg(cfg.copy())
    runner.load_checkpoint(ckpt)
    return runner


def _perturbed_checkpoint(trained, path):
    """The trained weights with one tensor changed, saved at ``path`` (as a
    retraining would leave a new file at the same path)."""
    cfg, ckpt = trained
    sd = _fp_runner(cfg, ckpt).model.state_dict()
    key = next(k for k in sd if k.endswith('conv_seg.weight'))
    sd = {k: v.clone() for k, v in sd.items()}
    sd[key] += 0.5
    for k in sd:
        if k.startswith('backbone.') and k.endswith('.weight') and \
                sd[k].dim() == 4:
            sd[k] *= 1.5  # every backbone conv: new weight scales
    torch.save(dict(state_dict=sd, meta={}), path)


def _assert_fp_restored(runner, fp_runner):
    assert not any('Quant' in type(m).__name__
                   for m in runner.model.modules())
    fp = fp_runner.model.state_dict()
    restored = runner.model.state_dict()
    assert restored.keys() == fp.keys()
    for key, value in fp.items():  # bit for bit (memory format aside)
        assert torch.equal(restored[key], value), key
    data = batch()
    # the PTQ run converted the model to channels_last (the demo's
    # ChannelsLastHook), which changes convolution rounding only
    torch.testing.assert_close(run(runner.model.eval(), data),
                               run(fp_runner.model.eval(), data),
                               rtol=1e-5, atol=1e-5)


def test_retrained_checkpoint_at_same_path_is_recalibrated(trained,
                                                           tmp_path):
    import shutil
    cfg, ckpt = trained
    model_path = str(tmp_path / 'model.pth')
    shutil.copy(ckpt, model_path)
    work = str(tmp_path / 'work')
    first = ptq_cfg(trained, work, 'minmax', 'w8a8')
    first.load_from = model_path
    Runner.from_cfg(first).test()
    params = osp.join(work, 'ptq_params.pth')
    before = torch.load(params, weights_only=True)
    shutil.copy(params, str(tmp_path / 'v1_params.pth'))

    _perturbed_checkpoint(trained, model_path)  # same path, new contents
    second = ptq_cfg(trained, work, 'minmax', 'w8a8')
    second.load_from = model_path
    Runner.from_cfg(second).test()
    after = torch.load(params, weights_only=True)
    key = next(k for k in after['state_dict'] if k.startswith('backbone.')
               and k.endswith('w_quantizer.scale'))
    assert not torch.equal(after['state_dict'][key],
                           before['state_dict'][key])  # recalibrated
    assert after['meta']['checkpoint_sha256'] != \
        before['meta']['checkpoint_sha256']

    # the v1 parameters, named explicitly, are refused for the v2 weights
    third = ptq_cfg(trained, str(tmp_path / 'explicit'), 'minmax', 'w8a8')
    third.load_from = model_path
    third.ptq.load_params = str(tmp_path / 'v1_params.pth')
    runner = Runner.from_cfg(third)
    with pytest.raises(ValueError, match=r'v1_params.pth was calibrated for '
                       r'checkpoint .*model.pth \(sha256 file:[0-9a-f]{64}\) '
                       r'but the model was loaded from .*model.pth \(sha256 '
                       r'file:[0-9a-f]{64}\)'):
        runner.test()
    _assert_fp_restored(runner, _fp_runner(cfg, model_path))


def test_load_params_with_other_bits_fails_and_restores_fp(trained,
                                                           tmp_path):
    cfg, ckpt = trained
    w8 = str(tmp_path / 'w8')
    Runner.from_cfg(ptq_cfg(trained, w8, 'minmax', 'w8a8')).test()
    w4 = ptq_cfg(trained, str(tmp_path / 'w4'), 'minmax', 'w4a4')
    path = osp.join(w8, 'ptq_params.pth')
    w4.ptq.load_params = path
    runner = Runner.from_cfg(w4)
    with pytest.raises(ValueError, match=(
            rf"{path}: quantizer '[\w.]+' was calibrated at 8 bits but the "
            r'quantized model uses 4 bits')):
        runner.test()
    _assert_fp_restored(runner, _fp_runner(cfg, ckpt))
    # same quantizers and bits, another quant_cfg (observer)
    other = ptq_cfg(trained, str(tmp_path / 'pct'), 'percentile', 'w8a8')
    other.ptq.load_params = path
    runner = Runner.from_cfg(other)
    with pytest.raises(ValueError, match=(
            rf'{path} was calibrated with quant_cfg.global_qconfig.a_qscheme'
            r".observer = 'minmax' but the model is quantized with "
            r"'percentile'")):
        runner.test()
    _assert_fp_restored(runner, _fp_runner(cfg, ckpt))


def test_load_params_with_wrong_channel_count_fails_and_restores_fp(
        trained, tmp_path):
    cfg, ckpt = trained
    work = str(tmp_path / 'w8')
    Runner.from_cfg(ptq_cfg(trained, work, 'minmax', 'w8a8')).test()
    path = osp.join(work, 'ptq_params.pth')
    raw = torch.load(path, weights_only=True)
    key = next(k for k in raw['state_dict'] if k.endswith(
        'w_quantizer.scale') and raw['shapes'][k][0] > 1)
    n = raw['shapes'][key][0]
    raw['state_dict'][key] = raw['state_dict'][key][:-1].clone()
    raw['shapes'][key] = [n - 1]
    bad = str(tmp_path / 'bad.pth')
    torch.save(raw, bad)
    again = ptq_cfg(trained, str(tmp_path / 'again'), 'minmax', 'w8a8')
    again.ptq.load_params = bad
    runner = Runner.from_cfg(again)
    quantizer = key.rpartition('.')[0]
    with pytest.raises(ValueError, match=(
            rf"{bad} do not fit the quantized model: quantization parameter "
            rf"'scale' has shape \({n - 1},\) but UniformQuantizer in "
            rf"quantizer '{quantizer}' expects \({n},\)")):
        runner.test()
    _assert_fp_restored(runner, _fp_runner(cfg, ckpt))


def _fails_before_checkpoint_load(cfg, match):
    """The settings are checked at ``before_run``: the error comes before
    the checkpoint is loaded and before any layer is swapped."""
    runner = Runner.from_cfg(cfg)
    loaded = []
    runner.load_checkpoint = lambda *a, **k: loaded.append(a)
    with pytest.raises(ValueError, match=match):
        runner.test()
    assert not loaded
    assert not any('Quant' in type(m).__name__
                   for m in runner.model.modules())


@pytest.mark.parametrize('steps', [0, -2])
def test_calibrate_steps_must_be_positive(trained, tmp_path, steps):
    cfg = ptq_cfg(trained, str(tmp_path / 'steps'), 'minmax', steps=steps)
    _fails_before_checkpoint_load(cfg, rf'ptq.calibrate_steps must be a '
                                  rf'positive int, got {steps}')


def test_invalid_rule_regex_is_an_error_before_loading(trained, tmp_path):
    cfg = ptq_cfg(trained, str(tmp_path / 'regex'), 'minmax')
    rules = list(cfg.ptq.quant_cfg.rules)
    cfg.ptq.quant_cfg.rules = rules + [
        dict(pattern=r'decode_head\.[conv', skip=True)]
    _fails_before_checkpoint_load(cfg, (
        rf'quant_cfg.rules\[{len(rules)}\].pattern '
        r"'decode_head\\\\.\[conv' is not a valid regular expression"))


def test_empty_calibration_set_names_the_setting(trained, tmp_path):
    cfg, ckpt = trained
    qcfg_ = ptq_cfg(trained, str(tmp_path / 'empty'), 'minmax')
    ds = copy.deepcopy(qcfg_.train_dataloader.dataset)
    ds.pipeline = qcfg_.test_dataloader.dataset.pipeline
    ds.indices = 0
    ds.serialize_data = False  # mmengine cannot serialize 0 samples
    qcfg_.ptq.calibrate_dataloader = dict(dataset=ds)
    runner = Runner.from_cfg(qcfg_)
    with pytest.raises(ValueError, match=(
            r'the calibration set \(calibrate_dataloader.dataset\) has 0 '
            r'samples, fewer than calibrate_steps=4')):
        runner.test()
    _assert_fp_restored(runner, _fp_runner(cfg, ckpt))


def test_calibrate_on_dataset_without_samples(trained):
    cfg, ckpt = trained
    model = _fp_runner(cfg, ckpt).model.eval()
    state = quantize_model(model, qcfg(8, rules=[]))
    with pytest.raises(ValueError, match=r'the calibration set \(list\) has '
                       r'0 samples, fewer than calibrate_steps=4'):
        calibrate_on_dataset(state, model, [], steps=4)
