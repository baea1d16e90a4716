"""safe_torch_load and the checkpoint schemes ris_plugins installs: no code
runs from a checkpoint, wherever mmengine's ``load_checkpoint`` finds it."""
import os
import os.path as osp
import pickle
import re
import shutil
import sys
import types

import pytest
import torch
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from ris_plugins.utils import safe_checkpoint, safe_torch_load

FORCE = safe_checkpoint.FORCE_UNSAFE_ENV


class _Touch:
    """Pickles as ``os.system('touch <marker>')``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / 'pwned'
    yield path
    assert not path.exists(), 'the checkpoint ran code'


@pytest.fixture
def evil(tmp_path, marker):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'meta': _Touch(marker)}, path)
    return str(path)


@pytest.fixture
def good(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save({'state_dict': torch.nn.Linear(2, 1).state_dict()}, path)
    return str(path)


def test_force_env_refuses_malicious_checkpoint(evil, monkeypatch):
    monkeypatch.setenv(FORCE, '1')
    with pytest.raises(RuntimeError, match=f'{FORCE}.*') as err:
        load_checkpoint(torch.nn.Linear(2, 1), evil)
    assert evil in str(err.value)
    with pytest.raises(RuntimeError, match=FORCE):
        safe_torch_load(evil)


def test_force_env_loads_a_trusted_file(good, monkeypatch):
    monkeypatch.setenv(FORCE, '1')
    monkeypatch.setenv(safe_checkpoint.TRUSTED_ENV, good)
    model = torch.nn.Linear(2, 1)
    load_checkpoint(model, good)
    torch.testing.assert_close(model.state_dict(),
                               torch.load(good, weights_only=True)
                               ['state_dict'])


def test_weights_only_is_explicit(evil, monkeypatch):
    # Even if the environment check were bypassed (file trusted for the
    # switch but loaded through safe_torch_load), weights_only stays on.
    monkeypatch.setenv(FORCE, '1')
    monkeypatch.setattr(safe_checkpoint, '_force_unsafe_set', lambda: False)
    with pytest.raises(pickle.UnpicklingError, match='evil.pth'):
        safe_torch_load(evil)


@pytest.mark.parametrize('cut', [0, 10, 0.5])
def test_empty_and_truncated_files_name_the_path(good, tmp_path, cut):
    data = open(good, 'rb').read()
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    path = tmp_path / f'cut{n}.pth'
    path.write_bytes(data[:n])
    with pytest.raises(RuntimeError, match=re.escape(str(path))):
        load_checkpoint(torch.nn.Linear(2, 1), str(path))


@pytest.fixture
def served(tmp_path, monkeypatch):
    """Serve ``https://host/<name>`` from ``tmp_path/'server'`` and use
    ``tmp_path/'hub'`` as torch hub's directory (no network)."""
    server = tmp_path / 'server'
    server.mkdir()
    urls = []

    def download(url, dst, hash_prefix=None, progress=True):
        urls.append(url)
        shutil.copy(server / osp.basename(url), dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    return types.SimpleNamespace(dir=server, urls=urls)


def test_https_checkpoint_is_loaded_weights_only(served, evil, good):
    shutil.copy(evil, served.dir / 'evil.pth')
    shutil.copy(good, served.dir / 'good.pth')
    cached = osp.join(str(served.dir.parent), 'hub', 'checkpoints', 'evil.pth')
    with pytest.raises(pickle.UnpicklingError, match=re.escape(cached)):
        load_checkpoint(torch.nn.Linear(2, 1), 'https://host/x/evil.pth')
    model = torch.nn.Linear(2, 1)
    load_checkpoint(model, 'http://host/good.pth')
    torch.testing.assert_close(
        model.state_dict(),
        torch.load(good, weights_only=True)['state_dict'])
    assert served.urls == ['https://host/x/evil.pth', 'http://host/good.pth']


def test_https_refused_while_force_env_set(served, good, monkeypatch):
    shutil.copy(good, served.dir / 'good.pth')
    monkeypatch.setenv(FORCE, '1')
    with pytest.raises(RuntimeError, match='https://host/good.pth'):
        load_checkpoint(torch.nn.Linear(2, 1), 'https://host/good.pth')
    assert served.urls == []


@pytest.mark.parametrize('scheme,table', [
    ('torchvision://', 'get_torchvision_models'),
    ('modelzoo://', 'get_torchvision_models'),
    ('mmcls://', 'get_mmcls_models'),
    ('open-mmlab://', 'get_external_models'),
    ('openmmlab://', 'get_external_models'),
])
def test_model_zoo_schemes_go_through_the_safe_download(
        served, evil, monkeypatch, scheme, table):
    shutil.copy(evil, served.dir / 'evil.pth')
    monkeypatch.setattr(safe_checkpoint, table,
                        lambda: {'net': 'https://host/evil.pth'})
    with pytest.raises(pickle.UnpicklingError, match='evil.pth'):
        load_checkpoint(torch.nn.Linear(2, 1), scheme + 'net')
    with pytest.raises(KeyError, match='net'):
        load_checkpoint(torch.nn.Linear(2, 1), scheme + 'nope')


def test_open_mmlab_local_entry_is_loaded_weights_only(
        tmp_path, evil, monkeypatch):
    monkeypatch.setattr(safe_checkpoint, 'get_external_models',
                        lambda: {'net': 'evil.pth'})
    monkeypatch.setattr(safe_checkpoint, '_get_mmengine_home',
                        lambda: str(tmp_path))
    with pytest.raises(pickle.UnpicklingError, match='evil.pth'):
        load_checkpoint(torch.nn.Linear(2, 1), 'open-mmlab://net')


def test_s3_checkpoint_is_loaded_weights_only(evil, monkeypatch):
    data = open(evil, 'rb').read()
    backend = types.SimpleNamespace(get=lambda name: data)
    monkeypatch.setattr(safe_checkpoint, 'get_file_backend',
                        lambda *a, **k: backend)
    for url in ('s3://bucket/evil.pth', 'cluster:s3://bucket/evil.pth',
                'petrel://bucket/evil.pth'):
        with pytest.raises(pickle.UnpicklingError, match=re.escape(url)):
            load_checkpoint(torch.nn.Linear(2, 1), url)


def test_pavi_checkpoint_is_loaded_weights_only(evil, monkeypatch):

    class Model:
        name = 'evil.pth'

        def download(self, dst):
            shutil.copy(evil, dst)

    pavi = types.ModuleType('pavi')
    pavi.modelcloud = types.SimpleNamespace(get=lambda path: Model())
    monkeypatch.setitem(sys.modules, 'pavi', pavi)
    with pytest.raises(pickle.UnpicklingError, match='evil.pth'):
        load_checkpoint(torch.nn.Linear(2, 1), 'pavi://models/evil')


def test_every_mmengine_scheme_has_a_safe_loader():
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader.__module__ == safe_checkpoint.__name__, prefix


def _torch_floor(pyproject: str) -> tuple:
    text = open(pyproject).read()
    m = re.search(r'"torch>=([0-9.]+)"', text)
    assert m, 'pyproject.toml must give torch a lower bound'
    return tuple(int(x) for x in m.group(1).split('.'))


def test_torch_floor_has_the_safe_loader_api_and_fixes():
    # torch.serialization.safe_globals appeared in 2.5; weights_only=True
    # could still run code before 2.6 (CVE-2025-32434) and corrupt memory
    # before 2.10 (CVE-2026-24747).
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    assert _torch_floor(osp.join(root, 'pyproject.toml')) >= (2, 10)
