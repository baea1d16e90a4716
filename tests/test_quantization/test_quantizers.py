"""Quantizer modules: observers vs. hand-computed values, the candidate API,
state_dict round trips and errors."""
import pytest
import torch
import torch.nn.functional as F

from mmseg.registry import MODELS
from ris_plugins.quantization import QUANTIZERS, quantize_model
from ris_plugins.quantization.quantizers import (DEFAULT_FAITHFUL,
                                                 RORQQuantizer,
                                                 TwinUniformGELUQuantizer,
                                                 TwinUniformSoftmaxQuantizer,
                                                 UniformQuantizer)

T = torch.tensor
ALL = [UniformQuantizer, TwinUniformSoftmaxQuantizer,
       TwinUniformGELUQuantizer, RORQQuantizer]
P = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0,  # docs §11
     0.05, -0.15, 0.25, -0.35, 0.45, -0.55, 0.65, -0.75, 0.85, -0.95]


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a.float(), torch.as_tensor(b).float(),
                               rtol=tol, atol=tol)


def calibrated(q, x):
    q.init_params(x)
    q.enabled = True
    return q


# -------------------------------------------------------------- errors
@pytest.mark.parametrize('cls', ALL)
@pytest.mark.parametrize('bits', [1, 17, 4.0, True])
def test_bad_bits(cls, bits):
    with pytest.raises(ValueError, match=r'bits must be an int in '
                       rf'\[2, 16\], got {bits!r}'):
        cls(bits=bits)


def test_unknown_options():
    with pytest.raises(ValueError, match="observer='kl'.*minmax"):
        UniformQuantizer(observer='kl')
    with pytest.raises(ValueError, match="granularity='row'.*channel"):
        UniformQuantizer(granularity='row')
    with pytest.raises(ValueError, match='symmetric'):
        UniformQuantizer(symmetric=False, observer='ptq4vit')
    with pytest.raises(ValueError, match='percentile'):
        UniformQuantizer(observer='percentile', percentile=99.9)


@pytest.mark.parametrize('cls', ALL)
@pytest.mark.parametrize('bad', [float('nan'), float('inf')])
def test_nan_inf_calibration_input(cls, bad):
    q = cls(bits=4)
    q.name = 'backbone.fc1.a_quantizer'
    with pytest.raises(ValueError, match='NaN or Inf in calibration input.*'
                       'backbone.fc1.a_quantizer'):
        q.init_params(T([0.1, bad, 0.3]))
    assert not q.calibrated


def test_channel_count_mismatch_input():
    q = UniformQuantizer(4, granularity='channel', num_channels=3)
    with pytest.raises(ValueError, match='2 channels'):
        q.init_params(torch.randn(2, 5))


# ------------------------------------------------------- plain observers
def test_disabled_or_uncalibrated_is_identity():
    x = torch.randn(4, 3)
    q = UniformQuantizer(2)
    q.enabled = True
    assert q(x) is x  # enabled but not calibrated
    q.init_params(x)
    q.enabled = False
    assert q(x) is x
    q.enabled = True
    assert not torch.equal(q(x), x)


def test_uniform_minmax_tensor_sym_and_asym():
    # 3 bits sym: Δ = 3/3 = 1, levels -4..3; 0.5 rounds to 0
    q = calibrated(UniformQuantizer(3), T([-3.0, 0.5, 1.4, 2.0]))
    close(q.scale, 1.0)
    close(q(T([-3.0, 0.5, 1.4, 2.0])), [-3.0, 0.0, 1.0, 2.0])
    # 2 bits asym on [-1, 2]: Δ = 1, z = 1
    q = calibrated(UniformQuantizer(2, symmetric=False), T([-1.0, 0.2, 2.0]))
    close(q.scale, 1.0)
    close(q.zero_point, 1.0)
    close(q(T([-1.0, 0.2, 2.0, 5.0])), [-1.0, 0.0, 2.0, 2.0])


def test_uniform_per_channel_hand():
    w = T([[-1.0, 0.5, 0.25], [4.0, -2.0, 1.0]])  # 3 bits: Δ = absmax/3
    q = calibrated(UniformQuantizer(3, granularity='channel'), w)
    assert q.group_shape == (2, )
    close(q.scale, [1 / 3, 4 / 3])
    close(q(w), [[-1.0, 2 / 3, 1 / 3], [4.0, -8 / 3, 4 / 3]])
    # channels on axis 1 ((N, C) activations)
    q1 = calibrated(UniformQuantizer(3, granularity='channel', ch_axis=1),
                    w.t())
    close(q1.scale, [1 / 3, 4 / 3])
    close(q1(w.t()), q(w).t())


def test_uniform_per_head_hand():
    x = torch.zeros(2, 2, 1, 2)  # (B, H, N, M)
    x[:, 0] = T([[[0.5, -1.0]], [[0.25, 0.75]]])
    x[:, 1] = T([[[10.0, 2.0]], [[-4.0, 3.0]]])
    q = calibrated(UniformQuantizer(8, granularity='head'), x)
    assert q.ch_axis == 1 and q.group_shape == (2, )
    close(q.scale, [1 / 127, 10 / 127])


def test_ptq4vit_percentile_omse_observers():
    q = calibrated(UniformQuantizer(8, observer='ptq4vit'), T([-12.75, 1.0]))
    close(q.scale, 0.1)  # 12.75 / (128 - 0.5)
    x = torch.arange(101.0)
    q = calibrated(UniformQuantizer(8, observer='percentile',
                                    percentile=0.99), x)
    close(q.scale, 99 / 127)  # quantile(|x|, 0.99) = 99
    q = calibrated(UniformQuantizer(8, symmetric=False, observer='percentile',
                                    percentile=(0.5, 0.99)), x)
    close(q.scale, 99 / 255)  # range [1, 99] -> [0, 99]; 0.5 clips more
    close(q.zero_point, 0.0)
    # OMSE, see test_functional: 2 bits, 4x1.4 and 3 -> Δ = 3·0.57
    q = calibrated(UniformQuantizer(2, observer='omse'),
                   T([1.4, 1.4, 1.4, 1.4, 3.0]))
    close(q.scale, 1.71)


def test_pdquant_observer_hand():
    w = T([[0.0, 1.0, 2.0, 3.0], [-3.0, -2.0, -1.0, 0.0]])
    q = calibrated(UniformQuantizer(2, symmetric=False, observer='pdquant',
                                    granularity='channel'), w)
    close(q.scale, [1.0, 1.0])
    close(q.zero_point, [0.0, 3.0])
    close(q(w), w)


def test_gelu_initial_step_signed_max():
    q = calibrated(TwinUniformGELUQuantizer(8), T([-5.0, 1.275]))
    close(q.pos_scale, 0.01)  # signed max 1.275 / 127.5, not |min| = 5
    assert q.neg_scale == pytest.approx(0.16997124254703522 / 128)


def test_softmax_split_init_and_modes():
    x = torch.softmax(torch.randn(2, 3, 8, 8, generator=torch.Generator()
                                  .manual_seed(0)) * 3, -1)
    q = calibrated(TwinUniformSoftmaxQuantizer(4), x)
    errs = [((x - q.fake_quant_candidate(x, i))**2).mean() for i in range(20)]
    assert q.split.item() == 2.0**-int(torch.argmin(torch.stack(errs)))
    close(q.low_scale, q.split / 7)
    fixed = calibrated(TwinUniformSoftmaxQuantizer(8, faithful=False),
                       T([0.0, 1.0]))
    fixed.select(T(7))
    close(fixed(T([0.0, 1.0])), [0.0, 1.0])  # no Q(0) bias, no +s
    faithful = calibrated(TwinUniformSoftmaxQuantizer(8, faithful=True),
                          T([0.0, 1.0]))
    faithful.select(T(7))
    close(faithful(T([0.0, 1.0])), [1 / 127, 1 + 2**-7])


def test_rorq_module_modes():
    x = T(P * 3 + [30.0, -25.0])
    q = calibrated(RORQQuantizer(4, faithful=True), x)
    assert q.num_bands == 2 and q.num_candidates() == 0
    close(q.thresholds, [15.899311, 38.106602])
    close(q(T([40.0])), [0.886667])  # band-0 fallback
    fixed = calibrated(RORQQuantizer(4, faithful=False), x)
    assert fixed.band_ids(T([40.0])).tolist() == [1]  # last band
    close(fixed(T([40.0])), [8 * 11 / 3])
    with pytest.raises(RuntimeError, match='no search candidates'):
        q.select(T(0))


# ------------------------------------------------------- candidate API
def test_uniform_candidates_per_channel():
    w = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    q = calibrated(UniformQuantizer(4, granularity='channel',
                                    observer='ptq4vit'), w)
    init = q.scale.clone()
    assert q.num_candidates() == 100
    cands = [q.fake_quant_candidate(w, i) for i in (3, 50)]
    assert torch.equal(q.scale, init)  # state unchanged
    q.select(T([3, 50]))
    close(q.scale, init * T([0.01 + 3 * 0.0119, 0.01 + 50 * 0.0119]))
    out = q(w)
    assert torch.equal(out[0], cands[0][0]) and torch.equal(out[1],
                                                            cands[1][1])
    with pytest.raises(ValueError, match='group_shape'):
        q.select(T(3))
    with pytest.raises(IndexError):
        q.select(T([0, 100]))


def test_candidate_is_grid_times_initial_step():
    q = calibrated(UniformQuantizer(8, observer='ptq4vit'), T([12.75]))
    # candidate 0: Δ = 0.01 · 0.1 = 0.001 -> 0.05 stays, 1.0 clips to 0.127
    close(q.fake_quant_candidate(T([0.05, 1.0]), 0), [0.05, 0.127])
    q.select(T(99))
    q.select(T(0))  # relative to the initial step, not the current one
    close(q.scale, 0.001)


@pytest.mark.parametrize('q,x,i', [
    (TwinUniformSoftmaxQuantizer(4), torch.rand(2, 2, 4, 4), 5),
    (TwinUniformGELUQuantizer(4), F.gelu(torch.randn(4, 8) * 3), 42),
    (UniformQuantizer(4, symmetric=False, granularity='head'),
     torch.randn(2, 3, 4, 4), 17),
])
def test_select_then_forward_equals_candidate(q, x, i):
    calibrated(q, x)
    cand = q.fake_quant_candidate(x, i)
    q.select(torch.full(q.group_shape, i, dtype=torch.long))
    assert torch.equal(q(x), cand)


# ------------------------------------------------------ state dict
@pytest.mark.parametrize('make,x', [
    (lambda: UniformQuantizer(4, symmetric=False, granularity='channel',
                              observer='omse'), torch.randn(5, 7)),
    (lambda: UniformQuantizer(3, granularity='head'), torch.randn(2, 3, 4, 4)),
    (lambda: TwinUniformSoftmaxQuantizer(4), torch.rand(3, 9)),
    (lambda: TwinUniformGELUQuantizer(6), F.gelu(torch.randn(6, 9))),
    (lambda: RORQQuantizer(4), torch.randn(300) * torch.rand(300) * 10),
])
def test_state_dict_round_trip(make, x):
    q = calibrated(make(), x)
    if isinstance(q, (UniformQuantizer, TwinUniformGELUQuantizer)):
        q.select(torch.full(q.group_shape, 60, dtype=torch.long))
    fresh = make()
    assert not fresh.calibrated
    fresh.load_state_dict(q.state_dict())
    fresh.enabled = True
    assert fresh.calibrated
    for k, v in q.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    assert torch.equal(fresh(x), q(x))


def test_state_dict_mismatch_errors():
    src = calibrated(UniformQuantizer(4, granularity='channel'),
                     torch.randn(3, 5)).state_dict()
    with pytest.raises(RuntimeError, match="'scale'.*\\(3,\\).*\\(4,\\)"):
        UniformQuantizer(4, granularity='channel',
                         num_channels=4).load_state_dict(src)
    dst = calibrated(UniformQuantizer(4, granularity='channel'),
                     torch.randn(4, 5))
    with pytest.raises(RuntimeError, match="'scale'"):
        dst.load_state_dict(src)
    with pytest.raises(RuntimeError, match="'scale'"):
        UniformQuantizer(4).load_state_dict(src)  # per tensor expects ()
    bad = {'thresholds': T([1.0, 2.0]), 'scales': T([0.1, 0.2, 0.3]),
           'zero_points': T([0.0, 1.0, 2.0])}
    with pytest.raises(RuntimeError, match='thresholds'):
        RORQQuantizer(4).load_state_dict(bad)


def test_registry_and_repr():
    q = QUANTIZERS.build(dict(type='UniformQuantizer', bits=4,
                              granularity='channel'))
    assert isinstance(q, UniformQuantizer)
    assert 'calibrated=False' in repr(q)
    q.init_params(torch.randn(3, 4))
    assert 'bits=4' in repr(q) and 'scale=(3,)' in repr(q)
    for name in ('TwinUniformSoftmaxQuantizer', 'TwinUniformGELUQuantizer',
                 'RORQQuantizer'):
        assert QUANTIZERS.build(dict(type=name, bits=8)).bits == 8


def test_quantizers_have_their_own_child_registry():
    """Quantizers are not models: plain ``MODELS`` lookups do not see them,
    the scoped name does, and a model type is never built as a quantizer
    (the old lookup took any MODELS entry named '*Quantizer')."""
    assert QUANTIZERS.parent is MODELS
    assert MODELS.get('UniformQuantizer') is None
    assert MODELS.get('ris_plugins.UniformQuantizer') is UniformQuantizer
    assert sorted(QUANTIZERS.module_dict) == sorted(c.__name__ for c in ALL)
    with pytest.raises(KeyError, match=r"unknown quantizer type "
                       r"'RefSegmentor'; valid types: \['RORQQuantizer'"):
        QUANTIZERS.build(dict(type='RefSegmentor'))
    # the runner's default scope 'mmseg' does not hide the child's entries
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmseg'):
        assert isinstance(QUANTIZERS.build(dict(type='RORQQuantizer')),
                          RORQQuantizer)


@pytest.mark.parametrize('cls', ALL)
def test_one_faithful_default(cls):
    """Every quantizer class and the config path (quant_cfg without
    ``faithful``) default to the same mode."""
    assert DEFAULT_FAITHFUL is False
    assert cls().__dict__.get('faithful', DEFAULT_FAITHFUL) is DEFAULT_FAITHFUL
    if cls is TwinUniformGELUQuantizer:
        return  # no faithful switch (one arithmetic)
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4))
    scheme = dict(type=cls.__name__)
    state = quantize_model(layer, dict(w_bits=8, a_bits=8, global_qconfig=dict(
        w_qscheme=None, a_qscheme=scheme)))
    assert state.layers['0'].a_quantizer.faithful is DEFAULT_FAITHFUL
