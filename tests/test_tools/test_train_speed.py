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
