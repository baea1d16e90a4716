"""Every resolved config equals its committed snapshot.

``tests/data/resolved_configs.json.gz`` holds, for every config under
``configs/`` and ``projects/*/configs/`` (``_base_`` files excluded), what
mmengine resolves it to: ``Config.fromfile(path).to_dict()`` (inheritance
applied, ``_base_``-only helper variables such as ``tokenizer`` or
``img_scale`` included), as canonical JSON (sorted keys, tuples as lists).
Refactoring configs (moving keys between bases, renaming helper files) must
not change what a config means, and this test shows it did not; nothing is
ignored.

When a change to the resolved configs is intended (a new config, a new
default in ``configs/_base_/default_runtime.py``, a renamed or deleted
config, a changed hyper-parameter), regenerate the snapshot from the
repository root and commit it with the change, after reading the diff the
failing test printed::

    python -m tests.test_configs.test_resolved_configs --regenerate

A failure prints, per config, the first differing keys (dotted paths, list
indices in brackets) with the snapshot's and the current value.
"""
import argparse
import glob
import gzip
import json
import os.path as osp
from typing import Any, Dict, List

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SNAPSHOT = osp.join(ROOT, 'tests', 'data', 'resolved_configs.json.gz')
REGENERATE = 'python -m tests.test_configs.test_resolved_configs --regenerate'
MAX_KEYS = 10  # differing keys printed per config
MISSING = '<missing>'


def config_paths() -> List[str]:
    """Repository-relative paths of every config (no ``_base_`` files)."""
    found = glob.glob(osp.join(ROOT, 'configs', '**', '*.py'),
                      recursive=True)
    found += glob.glob(osp.join(ROOT, 'projects', '*', 'configs', '**',
                                '*.py'), recursive=True)
    rel = (osp.relpath(p, ROOT) for p in found)
    return sorted(p for p in rel if '_base_' not in p.split(osp.sep))


def _json_default(obj: Any) -> Any:
    """Objects JSON cannot hold are kept by their repr, marked as such."""
    return {'__repr__': repr(obj)}


def resolve(rel_path: str) -> dict:
    """The canonical JSON form of one resolved config."""
    cfg = Config.fromfile(osp.join(ROOT, rel_path)).to_dict()
    return json.loads(json.dumps(cfg, sort_keys=True, default=_json_default))


def resolve_all() -> Dict[str, dict]:
    return {p: resolve(p) for p in config_paths()}


def write_snapshot(path: str = SNAPSHOT) -> int:
    """Write the snapshot of every config (deterministic bytes); returns
    the number of configs."""
    configs = resolve_all()
    text = json.dumps(configs, sort_keys=True, indent=1) + '\n'
    with open(path, 'wb') as f:
        with gzip.GzipFile(fileobj=f, mode='wb', mtime=0) as gz:
            gz.write(text.encode())
    return len(configs)


def load_snapshot(path: str = SNAPSHOT) -> Dict[str, dict]:
    with gzip.open(path, 'rt') as f:
        return json.load(f)


def flatten(value: Any, prefix: str = '') -> Dict[str, Any]:
    """Dotted paths -> leaves; empty dicts / lists are leaves too."""
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(flatten(v, f'{prefix}.{k}' if prefix else str(k)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f'{prefix}[{i}]'))
        return out
    return {prefix: value}


def differences(old: dict, new: dict) -> List[str]:
    """Lines ``key: snapshot -> current`` for every differing leaf."""
    a, b = flatten(old), flatten(new)
    keys = sorted(k for k in set(a) | set(b)
                  if a.get(k, MISSING) != b.get(k, MISSING))
    return [f'{k}: {a.get(k, MISSING)!r} -> {b.get(k, MISSING)!r}'
            for k in keys]


@pytest.fixture(scope='module')
def snapshot() -> Dict[str, dict]:
    if not osp.exists(SNAPSHOT):
        pytest.fail(f'{SNAPSHOT} is missing; generate it with {REGENERATE}')
    return load_snapshot()


def test_the_same_configs_exist(snapshot):
    current, saved = set(config_paths()), set(snapshot)
    assert current == saved, (
        f'configs not in the snapshot: {sorted(current - saved)}; in the '
        f'snapshot but gone: {sorted(saved - current)}. If intended, '
        f'regenerate: {REGENERATE}')


@pytest.mark.parametrize('rel_path', config_paths())
def test_resolved_config_matches_snapshot(rel_path, snapshot):
    if rel_path not in snapshot:
        pytest.fail(f'{rel_path} is not in the snapshot; if it is a new '
                    f'config, regenerate: {REGENERATE}')
    diff = differences(snapshot[rel_path], resolve(rel_path))
    if diff:
        shown = '\n  '.join(diff[:MAX_KEYS])
        more = (f'\n  ... and {len(diff) - MAX_KEYS} more'
                if len(diff) > MAX_KEYS else '')
        pytest.fail(f'{rel_path} resolves differently from the snapshot '
                    f'({len(diff)} keys):\n  {shown}{more}\nIf intended, '
                    f'regenerate: {REGENERATE}')


def test_differences_name_changed_added_and_removed_keys():
    old = dict(model=dict(test_cfg=dict(mode='whole'), a=[1, 2]), b=1)
    new = dict(model=dict(test_cfg=dict(), a=[1, 3]), b=1, c=None)
    assert differences(old, new) == [
        "c: '<missing>' -> None",
        'model.a[1]: 2 -> 3',
        "model.test_cfg: '<missing>' -> {}",
        "model.test_cfg.mode: 'whole' -> '<missing>'",
    ]
    assert differences(old, old) == []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--regenerate', action='store_true',
                        help=f'rewrite {osp.relpath(SNAPSHOT, ROOT)}')
    args = parser.parse_args()
    if not args.regenerate:
        parser.error('nothing to do: pass --regenerate')
    n = write_snapshot()
    print(f'wrote {n} resolved configs to {osp.relpath(SNAPSHOT, ROOT)}')


if __name__ == '__main__':
    main()
