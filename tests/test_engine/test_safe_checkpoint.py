"""Both halves of checkpoint safety: mmengine checkpoints round-trip through
test and resume with weights_only=True, and malicious pickles are refused."""
import io
import os
import pickle
import re

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import Runner, load_checkpoint

from ris_plugins.utils import safe_checkpoint

from ..conftest import tiny_cfg


class _RunShell:
    """Pickles as os.system('...') (a plain callable)."""

    def __reduce__(self):
        return (os.system, ('echo pwned',))


class _Attr:
    """Pickles as getattr(obj, name); nested, it walks an attribute chain
    (HistoryBuffer.__init__.__globals__ reaches module globals and from
    there os.system): what allow-listing builtins.getattr would open."""

    def __init__(self, obj, name):
        self.obj, self.name = obj, name

    def __reduce__(self):
        return (getattr, (self.obj, self.name))


def _save(obj, path):
    torch.save({'state_dict': {}, 'meta': obj}, path)
    return str(path)


def test_history_buffer_pickles_without_getattr():
    buf = HistoryBuffer()
    buf.update(1.0)
    buf.statistics('mean')
    data = pickle.dumps(buf, protocol=2)
    assert b'getattr' not in data
    restored = pickle.loads(data)
    assert restored.mean() == 1.0 and restored.statistics('max') == 1.0
    unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(
        _save_buffer(buf)))
    assert unsafe <= {f'{g.__module__}.{g.__qualname__}'
                      for g in safe_checkpoint.SAFE_GLOBALS} | {
                          'numpy._core.multiarray._reconstruct',
                          'numpy._core.multiarray.scalar'}


def _save_buffer(buf):
    f = io.BytesIO()
    torch.save({'message_hub': {'x': buf}}, f)
    path = os.path.join(os.environ.get('TMPDIR', '/tmp'),
                        f'buf-{os.getpid()}.pth')
    with open(path, 'wb') as out:
        out.write(f.getvalue())
    return path


@pytest.mark.parametrize('payload', [
    _RunShell(),
    _Attr(_Attr(HistoryBuffer, '__init__'), '__globals__')
])
def test_malicious_checkpoints_are_refused(tmp_path, payload, capfd):
    path = _save(payload, tmp_path / 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match='evil.pth'):
        load_checkpoint(torch.nn.Linear(1, 1), path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # weights_only stays on globally
    assert 'pwned' not in capfd.readouterr().out


def test_trusted_opt_in_loads_legacy_checkpoint(tmp_path, monkeypatch):
    # A checkpoint in mmengine's old format (statistics methods pickled
    # through getattr) loads only when its path is listed explicitly.
    legacy = {'statistics_methods': {'min': HistoryBuffer.min}}
    path = _save(legacy, tmp_path / 'legacy.pth')
    with pytest.raises(pickle.UnpicklingError, match='RIS_TRUSTED'):
        safe_checkpoint.load_local_checkpoint(path)
    monkeypatch.setenv(safe_checkpoint.TRUSTED_ENV, path)
    ckpt = safe_checkpoint.load_local_checkpoint(path)
    assert ckpt['meta']['statistics_methods']['min'] is HistoryBuffer.min
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        safe_checkpoint.load_local_checkpoint(str(tmp_path / 'nope.pth'))


@pytest.mark.slow
def test_runner_checkpoint_round_trips_test_and_resume(refshapes_root,
                                                        tmp_path):
    work = str(tmp_path / 'work')
    runner = Runner.from_cfg(tiny_cfg(refshapes_root, work, max_iters=2))
    runner.train()
    ckpt = os.path.join(work, 'iter_2.pth')
    assert os.path.isfile(ckpt)
    assert 'builtins.getattr' not in \
        torch.serialization.get_unsafe_globals_in_checkpoint(ckpt)

    cfg = tiny_cfg(refshapes_root, work)
    cfg.load_from = ckpt
    tester = Runner.from_cfg(cfg)
    metrics = tester.test()
    assert 'oIoU' in metrics and 'mIoU' in metrics
    torch.testing.assert_close(
        tester.model.state_dict(),
        torch.load(ckpt, weights_only=True)['state_dict'])

    cfg = tiny_cfg(refshapes_root, work, max_iters=3)
    cfg.resume = True
    cfg.load_from = ckpt
    resumed = Runner.from_cfg(cfg)
    resumed.train()
    assert resumed.iter == 3
    assert os.path.isfile(os.path.join(work, 'iter_3.pth'))


class _Touch:
    """Pickles as ``os.system('touch <marker>')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


def test_force_env_refuses_malicious_load_from(refshapes_root, tmp_path,
                                               monkeypatch):
    marker = tmp_path / 'pwned'
    path = str(tmp_path / 'evil.pth')
    torch.save({'state_dict': {}, 'meta': _Touch(marker)}, path)
    monkeypatch.setenv(safe_checkpoint.FORCE_UNSAFE_ENV, '1')
    cfg = tiny_cfg(refshapes_root, str(tmp_path / 'work'))
    cfg.load_from = path
    with pytest.raises(RuntimeError,
                       match=safe_checkpoint.FORCE_UNSAFE_ENV) as err:
        Runner.from_cfg(cfg).test()
    assert path in str(err.value)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize('resume', [False, True])
@pytest.mark.parametrize('size', [0, 100])
def test_empty_or_truncated_checkpoint_names_the_file(
        refshapes_root, tmp_path, resume, size):
    good = str(tmp_path / 'good.pth')
    torch.save({'state_dict': torch.nn.Linear(200, 200).state_dict()}, good)
    path = str(tmp_path / f'cut{size}.pth')
    with open(good, 'rb') as src, open(path, 'wb') as dst:
        dst.write(src.read()[:size])
    cfg = tiny_cfg(refshapes_root, str(tmp_path / 'work'))
    cfg.load_from, cfg.resume = path, resume
    runner = Runner.from_cfg(cfg)
    with pytest.raises(RuntimeError, match=re.escape(path)):
        runner.train() if resume else runner.test()
