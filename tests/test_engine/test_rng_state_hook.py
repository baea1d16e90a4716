"""RNGStateHook: resuming from the middle of a run reproduces the
uninterrupted run bit for bit, dropout and random flips included."""
import os.path as osp
import random

import numpy as np
import pytest
import torch
from mmengine.runner import Runner

from ris_plugins.engine.hooks.rng_state_hook import (RNG_KEY, get_rng_state,
                                                     set_rng_state)

from ..conftest import tiny_cfg

N = 6


def _cfg(root, work, rng_hook=True):
    cfg = tiny_cfg(root, work, max_iters=N)
    cfg.model.decode_head.dropout_ratio = 0.5
    cfg.default_hooks.checkpoint.interval = N // 2
    if not rng_hook:
        cfg.default_hooks.pop('rng_state')
    return cfg


def _train(cfg, resume_from=None):
    if resume_from:
        cfg.resume, cfg.load_from = True, resume_from
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert runner.iter == N
    return {k: v.detach().clone() for k, v in runner.model.state_dict().items()}


def _differing(a, b):
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(refshapes_root, tmp_path):
    full = _train(_cfg(refshapes_root, str(tmp_path / 'full')))
    half = osp.join(str(tmp_path / 'full'), f'iter_{N // 2}.pth')
    ckpt = torch.load(half, weights_only=True)
    assert {'torch', 'numpy', 'random'} <= set(ckpt[RNG_KEY])
    resumed = _train(_cfg(refshapes_root, str(tmp_path / 'resumed')), half)
    assert _differing(full, resumed) == []

    # The same check without the hook sees the difference the hook removes
    # (the test can fail).
    full = _train(_cfg(refshapes_root, str(tmp_path / 'f2'), False))
    half = osp.join(str(tmp_path / 'f2'), f'iter_{N // 2}.pth')
    resumed = _train(_cfg(refshapes_root, str(tmp_path / 'r2'), False), half)
    assert _differing(full, resumed)


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    state = get_rng_state()
    expected = (torch.rand(3), np.random.randn(3), random.random())
    path = tmp_path / 'rng.pth'
    torch.save({RNG_KEY: state}, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    loaded = torch.load(path, weights_only=True)[RNG_KEY]
    torch.manual_seed(2)
    np.random.seed(2)
    random.seed(2)
    set_rng_state(loaded)
    got = (torch.rand(3), np.random.randn(3), random.random())
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1]) and got[2] == expected[2]
