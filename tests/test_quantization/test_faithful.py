"""PTQ4RIS reference mode (``configs/_base_/quantization/
ptq4ris_faithful.py``) against hand-computed official arithmetic
(``docs/ptq4ris.md`` §5.2 and §6)."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from ris_plugins.quantization import QUANTIZERS
from ris_plugins.quantization.quantizers import UniformQuantizer

from ..conftest import ROOT

T = torch.tensor
FAITHFUL = osp.join(ROOT, 'configs', '_base_', 'quantization',
                    'ptq4ris_faithful.py')


def faithful_cfg():
    return Config.fromfile(FAITHFUL).ptq.quant_cfg


def build(scheme, bits):
    """A quantizer from a config qscheme, as quantize_model builds it."""
    cfg = dict(scheme.to_dict() if hasattr(scheme, 'to_dict') else scheme)
    cfg.setdefault('bits', bits)
    cfg.setdefault('faithful', True)
    return QUANTIZERS.build(cfg)


def test_reference_symmetric_quantizers_start_from_ptq4vit_step():
    # PTQ4ViT: Δ0 = max|x| / (q - 0.5), q = 2^(b-1) = 8 at 4 bits:
    # 1.5 / 7.5 = 0.2 and 0.75 / 7.5 = 0.1 (min-max would give /7).
    glob = faithful_cfg().global_qconfig
    a = build(glob.a_qscheme, 4)
    a.init_params(T([0.5, -1.5, 0.25, 0.75]))
    torch.testing.assert_close(a.scale, T(0.2), rtol=1e-6, atol=0)
    w = build(glob.w_qscheme, 4)  # per output channel
    w.init_params(T([[0.3, -0.75, 0.1], [1.5, 0.0, -0.6]]))
    torch.testing.assert_close(w.scale, T([0.1, 0.2]), rtol=1e-6, atol=0)
    m = build(glob.m_qscheme, 4)  # per head, (B, H, N, M)
    x = torch.zeros(1, 2, 2, 2)
    x[0, 0] = T([[0.75, -0.5], [0.1, 0.2]])
    x[0, 1] = T([[0.2, -1.5], [1.0, 0.0]])
    m.init_params(x)
    torch.testing.assert_close(m.scale, T([0.1, 0.2]), rtol=1e-6, atol=0)


def _text_matmul_scheme():
    rules = [r for r in faithful_cfg().rules
             if r.get('types') == ['MatMul']
             and r.pattern.startswith('text_encoder')]
    assert len(rules) == 1
    assert rules[0].a_qscheme == rules[0].b_qscheme
    return rules[0].a_qscheme


def three_percentile_data():
    """100001 sorted values (+10) where linear-interpolated quantiles are
    exact: positions p·100000 = 99900 / 99990 / 99999 and 100 / 10 / 1
    sit inside runs of equal values."""
    counts = [(0, 30001), (1, 30000), (2, 39901), (3, 96), (6, 3)]
    x = torch.cat([torch.full((n, ), float(v)) for v, n in counts]) + 10
    assert x.numel() == 100001
    return x


def test_reference_text_matmul_keeps_lowest_mse_percentile_unclamped():
    # 2 bits (levels 0..3).  Candidates (official: range [quantile(1-p),
    # quantile(p)], Δ = range/3, z = round(-min/Δ), neither widened to 0
    # nor clamped):
    #   0.999   -> [10, 12]: Δ = 2/3, z = -15; the 30000 11s land on
    #              10.667 (error 1/9 each), the 3s on 12 ... MSE ≈ 0.035
    #   0.9999  -> [10, 13]: Δ = 1, z = -10; only the three 16s clip to 13:
    #              MSE = 3·9/100001 ≈ 2.7e-4  <- lowest
    #   0.99999 -> [10, 16]: Δ = 2, z = -5; the 11s round to 12 ... ≈ 0.30
    q = build(_text_matmul_scheme(), 2)
    x = three_percentile_data()
    q.init_params(x)
    q.enabled = True
    assert q.scale.item() == 1.0
    assert q.zero_point.item() == -10.0  # not clamped to [0, 3]
    torch.testing.assert_close(q(T([10.0, 11.0, 13.0, 16.0, 0.0])),
                               T([10.0, 11.0, 13.0, 13.0, 10.0]))
    # never searched, as the official BERT-matmul quantizers
    assert q.num_candidates() == 0


def test_faithful_percentile_single_hand_values():
    # x = 1..5, p = 1 -> range [1, 5] (not widened to 0): Δ = 4/255,
    # z = round(-1 / (4/255)) = round(-63.75) = -64; x = 1 -> round(63.75)
    # = 64 -> code 0 -> 64·Δ; x = 5 -> round(318.75) = 319 -> code 255.
    x = T([1.0, 2.0, 3.0, 4.0, 5.0])
    q = UniformQuantizer(8, symmetric=False, observer='percentile',
                         percentile=1.0, faithful=True)
    q.init_params(x)
    torch.testing.assert_close(q.scale, T(4 / 255))
    assert q.zero_point.item() == -64.0
    torch.testing.assert_close(q.quantize(T([1.0, 5.0])),
                               T([64 * 4 / 255, 319 * 4 / 255]))
    # default mode widens the range to [0, 5]: Δ = 5/255, z = 0
    d = UniformQuantizer(8, symmetric=False, observer='percentile',
                         percentile=1.0)
    d.init_params(x)
    torch.testing.assert_close(d.scale, T(5 / 255))
    assert d.zero_point.item() == 0.0


@pytest.mark.parametrize('value', [0.0, 3.0, -2.0])
def test_faithful_percentile_on_constant_input_stays_finite(value):
    # the official quantizer divides by Δ = 0 here (NaN); ours falls back
    # to the range widened to include 0, which represents the constant.
    q = UniformQuantizer(4, symmetric=False, observer='percentile',
                         percentile=(0.999, 0.9999), faithful=True)
    x = torch.full((50, ), value)
    q.init_params(x)
    q.enabled = True
    assert torch.isfinite(q.scale) and q.scale > 0
    torch.testing.assert_close(q(x), x)


def test_search_grid_none_has_no_candidates():
    q = UniformQuantizer(4, search_grid=None)
    q.init_params(T([1.0, -2.0]))
    assert q.num_candidates() == 0
    with pytest.raises(IndexError, match=r'candidate 0 out of range'):
        q.fake_quant_candidate(T([1.0]), 0)


def test_reference_mode_calibrates_a_whole_model():
    """The whole reference config on a tiny LAVT: every quantizer gets
    ``faithful=True``, calibration (one sample, a 16-row search: the cost
    is the number of candidates x rows) gives finite, quantized outputs."""
    from ..conftest import batch, calibrate_on, run, tiny_lavt
    from ris_plugins.quantization import quantize_model
    model, data = tiny_lavt(), batch(1)
    fp_out = run(model, data)
    cfg = faithful_cfg().to_dict()
    state = quantize_model(model, dict(cfg, w_bits=8, a_bits=8))
    text_mm = [q for n, q in state.quantizers()
               if n.startswith('text_encoder.') and '.matmul' in n]
    assert text_mm and all(q.faithful and q.num_candidates() == 0
                           and q.percentiles == (0.999, 0.9999, 0.99999)
                           for q in text_mm)
    assert all(q.faithful for _, q in state.quantizers()
               if hasattr(q, 'faithful'))
    times = calibrate_on(model, state, data, max_rows=16,
                         search=dict(rounds=1, rows=16))
    assert times['search'] > 0
    out = run(model, data)
    assert torch.isfinite(out).all() and not torch.equal(out, fp_out)
