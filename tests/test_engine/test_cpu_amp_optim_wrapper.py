"""CPUAmpOptimWrapper: bf16 autocast on the CPU through mmengine's
optimizer-wrapper interface, with no GradScaler, and a training step whose
loss and update stay within bf16 tolerance of the fp32 step."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import AmpOptimWrapper, build_optim_wrapper

from mmseg.registry import MODELS, OPTIM_WRAPPERS
from mmseg.utils import register_all_modules
from ris_plugins.engine import ChannelsLastHook, CPUAmpOptimWrapper
from ris_plugins.utils.synthetic import synthetic_batch, tokenize

from ..conftest import ROOT

CRIS = osp.join(ROOT, 'configs', 'demo',
                'cris-small_tiny-rn-minilm_1xb16-2k_refshapes-160x160.py')
OTHER_SENTENCE = 'the blue square right of the large green star'
LAVT = osp.join(ROOT, 'configs', 'demo',
                'lavt-small_swin-32-minilm_1xb16-1500i_refshapes-160x160.py')


def wrapper(module, **kwargs):
    register_all_modules()
    return build_optim_wrapper(
        module,
        dict(type='CPUAmpOptimWrapper',
             optimizer=dict(type='SGD', lr=0.1), **kwargs))


def test_registered_in_mmseg_and_is_an_amp_wrapper():
    assert OPTIM_WRAPPERS.get('CPUAmpOptimWrapper') is CPUAmpOptimWrapper
    w = wrapper(torch.nn.Linear(4, 4))
    assert isinstance(w, AmpOptimWrapper)
    assert w.loss_scaler is None
    assert w.cast_dtype is torch.bfloat16


@pytest.mark.parametrize('kwargs, match', [
    (dict(dtype='float16'), 'bfloat16 only'),
    (dict(dtype=torch.float32), 'bfloat16 only'),
    (dict(loss_scale=512.0), 'no loss scaling'),
    (dict(loss_scale=dict(init_scale=8.0)), 'no loss scaling'),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        wrapper(torch.nn.Linear(4, 4), **kwargs)


def test_context_autocasts_and_update_is_unscaled():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    w = wrapper(lin)
    x = torch.randn(5, 4)
    with w.optim_context(lin):
        y = lin(x)
    assert y.dtype is torch.bfloat16
    assert lin(x).dtype is torch.float32  # only inside the context
    before = lin.weight.detach().clone()
    loss = y.float().sum()
    w.update_params(loss)
    # SGD lr 0.1 on sum(W x + b): dW = sum_n x_n for every row, unscaled
    # (a loss scaler would multiply it); the product is computed in bf16,
    # so the gradient is that of bf16-rounded x, itself rounded to bf16.
    grad = x.bfloat16().float().sum(0)
    expected = before - 0.1 * grad.expand(3, -1)
    tol = 0.1 * 2**-8 * grad.abs().max().item()
    assert torch.allclose(lin.weight, expected, rtol=0, atol=tol)
    assert lin.weight.dtype is torch.float32


def test_state_dict_round_trip_drops_a_loss_scaler():
    lin = torch.nn.Linear(4, 3)
    w = wrapper(lin)
    state = w.state_dict()
    assert 'loss_scaler' not in state
    w.load_state_dict(dict(copy.deepcopy(state), loss_scaler={'scale': 1.}))
    assert w.state_dict()['param_groups'] == state['param_groups']


@pytest.mark.parametrize('config', [CRIS, LAVT], ids=['cris', 'lavt'])
def test_train_step_within_bf16_tolerance(config):
    """One ``train_step`` of a demo model (same initial weights, same
    batch of two different sentences) with the bf16 wrapper against the
    fp32 ``OptimWrapper``.

    Tolerance: bf16 keeps 8 significant bits (unit roundoff u = 2^-8 =
    3.9e-3) and every autocast product rounds its inputs, so the loss moves
    by a few u (observed < 1e-2 relative); 3e-2 is ~8u. Gradients are sums
    over pixels with heavy cancellation on random images, so per tensor
    they differ more (the CNN stem's cosine to fp32 is ~0.87 here); the
    whole update must point the same way (cosine > 0.8, observed 0.89 for
    CRIS, 0.9999 for LAVT) with a norm within 10%. The bf16 step must
    differ from fp32 at all (autocast is on).
    """
    register_all_modules()
    cfg = Config.fromfile(config)
    batch = synthetic_batch(cfg, 2)
    # two different sentences: BatchNorm1d over two identical text
    # features has zero variance and turns rounding into huge gradients.
    batch['data_samples'][1].set_metainfo(tokenize(cfg, OTHER_SENTENCE))
    results = []
    for kind in ('OptimWrapper', 'CPUAmpOptimWrapper'):
        torch.manual_seed(0)
        model = MODELS.build(cfg.model)
        model.init_weights()
        before = [p.detach().clone() for p in model.parameters()]
        optim = build_optim_wrapper(
            model, dict(type=kind, optimizer=dict(type='SGD', lr=1e-2)))
        torch.manual_seed(0)
        losses = model.train_step(batch, optim)
        delta = torch.cat([(p.detach() - b).flatten()
                           for p, b in zip(model.parameters(), before)])
        results.append((losses['loss'].item(), delta))
    (loss32, d32), (loss16, d16) = results
    assert loss16 != loss32
    assert abs(loss16 - loss32) <= 3e-2 * abs(loss32), (loss16, loss32)
    cos = torch.nn.functional.cosine_similarity(d32, d16, dim=0)
    assert cos > 0.8, cos
    assert abs(d16.norm() / d32.norm() - 1) < 0.1


def test_channels_last_hook_converts_the_runner_model():
    register_all_modules()
    cfg = Config.fromfile(CRIS)
    model = MODELS.build(cfg.model)

    class FakeRunner:
        pass

    runner = FakeRunner()
    runner.model = model
    ChannelsLastHook().before_run(runner)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(
        m.weight.is_contiguous(memory_format=torch.channels_last)
        for m in convs)
