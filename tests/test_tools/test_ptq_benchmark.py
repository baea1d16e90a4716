"""tools/analysis_tools/ptq_benchmark.py on a tiny config."""
import re

import pytest

from ..conftest import load_tool, tiny_cfg


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ptqbench')
    path = str(tmp / 'tiny.py')
    tiny_cfg(str(tmp), str(tmp)).dump(path)
    return path


def _run(tool, config, capsys, *extra):
    tool.main([config, '--samples', '2', '--skip-sizes', *extra])
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if 'calibration of' in x)
    groups = int(re.search(r'in (\d+) group', line).group(1))
    return groups, re.search(r'sha256 ([0-9a-f]{16})', line).group(1)


def test_streamed_and_one_pass_give_the_same_parameters(config, capsys):
    """A tiny cache budget cuts the layers into many groups; the printed
    parameter digest equals the one-pass calibration's."""
    tool = load_tool('analysis_tools/ptq_benchmark.py')
    groups, streamed = _run(tool, config, capsys, '--max-cache-mb', '0.01')
    one_groups, one_pass = _run(tool, config, capsys, '--max-cache-mb',
                                'none')
    assert groups > 1 and one_groups == 1
    assert streamed == one_pass


@pytest.mark.parametrize('bad', ['0', '-5', 'lots'])
def test_bad_cache_budget_is_named(config, bad, capsys):
    tool = load_tool('analysis_tools/ptq_benchmark.py')
    with pytest.raises(SystemExit):
        tool.main([config, '--max-cache-mb', bad])
    assert '--max-cache-mb must be a positive number' in \
        capsys.readouterr().err
