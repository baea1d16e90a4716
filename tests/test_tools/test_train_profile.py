"""tools/analysis_tools/train_profile.py on the tiny baseline."""
import pytest

from ..conftest import load_tool, tiny_cfg


def test_profile_reports_every_stage(refshapes_root, tmp_path, capsys):
    tool = load_tool('analysis_tools/train_profile.py')
    cfg = tiny_cfg(refshapes_root, str(tmp_path))
    path = str(tmp_path / 'tiny.py')
    cfg.dump(path)
    ms = tool.main([path, '--iters', '2', '--warmup', '1', '--work-dir',
                    str(tmp_path / 'work')])
    assert list(ms) == list(tool.STAGES)
    assert all(v >= 0 for v in ms.values()), ms
    # the text encoder ran and was timed on its own
    assert ms['text encoder'] > 0 and ms['backward'] > 0
    printed = capsys.readouterr().out
    assert '| text encoder |' in printed and '| sum of medians |' in printed


def test_timed_records_milliseconds():
    tool = load_tool('analysis_tools/train_profile.py')
    laps = []
    assert tool.timed(laps, lambda x: x + 1)(1) == 2
    assert len(laps) == 1 and laps[0] == pytest.approx(0, abs=50)
