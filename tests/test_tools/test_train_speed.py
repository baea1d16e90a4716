"""tools/analysis_tools/train_speed.py: one worker's measurement and the
side-by-side comparison."""
import pytest

from ..conftest import DEMO_CFG, load_tool


def tool():
    return load_tool('analysis_tools/train_speed.py')


def test_worker_times_training_steps():
    speed = tool()
    args = speed.parse_args([DEMO_CFG, '--batch', '1', '--steps', '2',
                             '--warmup', '0'])
    out = speed.time_steps(args)
    assert len(out['seconds']) == 2 and min(out['seconds']) > 0
    assert out['peak_mib'] > 100  # torch + the model are resident


@pytest.mark.parametrize('flag', ['--batch', '--steps', '--rounds'])
def test_non_positive_counts_are_refused(flag):
    with pytest.raises(SystemExit, match=flag):
        tool().parse_args([DEMO_CFG, flag, '0'])


@pytest.mark.slow
def test_two_settings_run_side_by_side(capsys):
    tool().main([DEMO_CFG, '--batch', '1', '--steps', '1', '--warmup', '0',
                 '--vs', 'model.decode_head.channels=16'])
    out = capsys.readouterr().out
    assert 'step-rate ratio B/A' in out and 'peak memory B/A' in out


def test_cpu_times_a_gpu_amp_config_as_fp32():
    from mmengine.config import Config
    speed = tool()
    cfg = Config(dict(optim_wrapper=dict(
        type='AmpOptimWrapper', loss_scale='dynamic', dtype='float16',
        optimizer=dict(type='Adam', lr=1e-4), clip_grad=None)))
    speed.cpu_optim_wrapper(cfg, 'cpu')
    assert cfg.optim_wrapper == dict(
        type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-4),
        clip_grad=None)
    kept = Config(dict(optim_wrapper=dict(type='CPUAmpOptimWrapper')))
    speed.cpu_optim_wrapper(kept, 'cpu')
    assert kept.optim_wrapper.type == 'CPUAmpOptimWrapper'
    gpu = Config(dict(optim_wrapper=dict(type='AmpOptimWrapper')))
    speed.cpu_optim_wrapper(gpu, 'cuda')
    assert gpu.optim_wrapper.type == 'AmpOptimWrapper'


@pytest.mark.parametrize('hooks', ['ChannelsLastHook',
                                   [dict(type='ChannelsLastHook')]])
def test_channels_last_and_compile_switches_are_applied(hooks):
    import torch
    from mmengine.config import Config
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    model.train_step = model.forward
    cfg = Config(dict(custom_hooks=hooks, compile=dict(backend='eager')))
    tool().apply_run_switches(cfg, model)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert model.train_step is not model.forward  # wrapped by compile
    x = torch.randn(1, 3, 8, 8)
    assert torch.allclose(model.train_step(x), model(x))


def test_worker_overrides_survive_as_json():
    speed = tool()
    args = speed.parse_args([DEMO_CFG, '--worker', '--overrides-json',
                             '{"custom_hooks": [{"type": "ChannelsLastHook"}]'
                             ', "compile": true}'])
    assert args.cfg_options == dict(
        custom_hooks=[dict(type='ChannelsLastHook')], compile=True)
