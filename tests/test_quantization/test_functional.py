"""Pure quantizer functions vs. hand-computed values and the worked vectors
of docs/ptq4ris.md §11 (float32 reference values)."""
import numpy as np
import pytest
import torch

from ris_plugins.quantization import functional as QF

T = torch.tensor
P = [0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.7, -0.8, 0.9, -1.0,
     0.05, -0.15, 0.25, -0.35, 0.45, -0.55, 0.65, -0.75, 0.85, -0.95]


def close(a, b, tol=1e-5):
    b = torch.as_tensor(b, dtype=torch.float32)
    torch.testing.assert_close(a.float(), b, rtol=tol, atol=tol,
                               equal_nan=True)


# --------------------------------------------------------------- §3
def test_quantize_sym_hand():
    # Δ=0.5, 2 bits: levels -2..1; 0.25/0.5 = 0.5 rounds half-to-even to 0
    x = T([-1.0, -0.26, 0.24, 0.25, 0.75, 2.0])
    close(QF.quantize_sym(x, 0.5, 2), [-1.0, -0.5, 0.0, 0.0, 0.5, 0.5])


def test_quantize_asym_hand():
    # Δ=0.1, z=3, 3 bits: codes 0..7 -> values (-3..4)·0.1
    x = T([-0.5, -0.3, 0.0, 0.26, 0.4, 1.0])
    close(QF.quantize_asym(x, 0.1, 3.0, 3), [-0.3, -0.3, 0, 0.3, 0.4, 0.4])


def test_asym_qparams_range_includes_zero():
    s, z = QF.asym_qparams(T([-1.0, 0.5, -2.0]), T([3.0, 2.0, -1.0]), 2)
    close(s, [4 / 3, 2 / 3, 2 / 3])
    close(z, [1.0, 0.0, 3.0])
    s, z = QF.asym_qparams(T(0.0), T(0.0), 8)  # degenerate: eps step
    assert s.item() == pytest.approx(1e-8) and z.item() == 0


def test_sym_scale_and_grid():
    close(QF.sym_scale(T([1.27, 0.0]), 8), [0.01, 1e-8])
    close(QF.sym_scale(T(12.75), 8, ptq4vit=True), 0.1)
    g = QF.ptq4vit_grid()
    assert g.shape == (100, ) and g.dtype == torch.float32
    close(g[[0, 1, 99]], [0.01, 0.0219, 1.1881])


# ------------------------------------------------------ §11 DRQ vectors
SMX_X = T([0, 5e-4, 0.003, 0.0078125, 0.01, 0.2, 0.5, 1.0])


@pytest.mark.parametrize('bits,split,expected', [
    (8, 2**-7, [0.007874, 0.008366, 0.010888, 0.015687, 0.015687, 0.204663,
                0.511750, 1.007812]),
    (8, 2**-10, [0, 0.0005, 0.000977, 0.008851, 0.008851, 0.197827,
                 0.504914, 1.000977]),
    (4, 2**-4, [0, 0, 0, 0.008929, 0.008929, 0.205357, 0.633929, 1.0625]),
])
def test_twin_softmax_faithful_vectors(bits, split, expected):
    out = QF.twin_uniform_softmax(SMX_X, split, bits, faithful=True)
    torch.testing.assert_close(out, T(expected), rtol=1e-4, atol=1e-6)


def test_twin_softmax_fixed_mode():
    # b=4, s=2^-4: Δ_lo = 1/112, high step 1/7; no +s offset, Q(0) = 0
    x = T([0.0, 0.03, 0.0625, 0.5, 1.0])
    out = QF.twin_uniform_softmax(x, 2**-4, 4, faithful=False)
    close(out, [0.0, 3 / 112, 0.0, 4 / 7, 1.0])
    out8 = QF.twin_uniform_softmax(SMX_X, 2**-7, 8, faithful=False)
    assert out8[0] == 0 and out8[-1] == 1.0  # faithful: 1/127 and 1+s
    # split as a tensor broadcast over rows
    xs = torch.stack([SMX_X, SMX_X])
    split = T([[2**-7], [2**-10]])
    both = QF.twin_uniform_softmax(xs, split, 8, faithful=True)
    close(both[1], QF.twin_uniform_softmax(SMX_X, 2**-10, 8))
    close(both[0], QF.twin_uniform_softmax(SMX_X, 2**-7, 8))


GELU_X = T([-0.17, -0.05, -0.001, 0, 0.3, 1, 5])


@pytest.mark.parametrize('bits,pos,expected', [
    (8, 0.02, [-0.169971, -0.050460, -0.001328, 0, 0.3, 1.0, 2.54]),
    (4, 0.2, [-0.169971, -0.042493, 0, 0, 0.4, 1.0, 1.4]),
])
def test_twin_gelu_vectors(bits, pos, expected):
    out = QF.twin_uniform_gelu(GELU_X, T(pos), bits)
    torch.testing.assert_close(out, T(expected), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------- §11 RORQ vectors
SMALL = T(P * 3 + [30.0, -25.0])


@pytest.mark.parametrize('bits,d,z,first10,tail', [
    (4, [0.126667, 3.666667], [8, 7],
     [0.126667, -0.253333, 0.253333, -0.38, 0.506667, -0.633333, 0.76,
      -0.76, 0.886667, -1.013333], [29.333333, -25.666667]),
    (8, [0.007451, 0.215686], [134, 116],
     [0.096863, -0.201176, 0.298039, -0.402353, 0.499216, -0.603529,
      0.700392, -0.797255, 0.901569, -0.998431], [29.980392, -25.019608]),
])
def test_rorq_small_vectors(bits, d, z, first10, tail):
    t_, d_, z_ = QF.rorq_calibrate(SMALL, bits)
    close(t_, [15.899311, 38.106602])
    torch.testing.assert_close(d_, T(d), rtol=1e-4, atol=1e-6)
    close(z_, z)
    y = QF.rorq_quantize(SMALL, t_, d_, z_, bits)
    close(y[:10], first10)
    close(y[-2:], tail)
    assert QF.rorq_band_ids(SMALL, t_, 2).bincount().tolist() == [60, 2]


def test_rorq_unseen_values_faithful_vs_fixed():
    t, d, z = QF.rorq_calibrate(SMALL, 4)
    x = T([40.0, -3.0])
    close(QF.rorq_quantize(x, t, d, z, 4), [0.886667, -1.013333])
    assert QF.rorq_band_ids(x, t, 2).tolist() == [0, 0]
    # fixed: 40 > T_last -> last band: round(40/3.6667)+7 = 18 -> 15 -> 8Δ
    assert QF.rorq_band_ids(x, t, 2, faithful=False).tolist() == [1, 0]
    close(QF.rorq_quantize(x, t, d, z, 4, faithful=False),
          [8 * 11 / 3, -1.013333])


def test_rorq_nan_edge_case():
    x = T(P + [12.0, -9.0])
    t, d, z = QF.rorq_calibrate(x, 4)
    assert t[0].item() == pytest.approx(10.385813, rel=1e-6)
    assert torch.isnan(t[1])
    close(d, [0.66, 0.8])
    close(z, [14, 0])
    assert QF.rorq_band_ids(x, t, 2).eq(0).all()
    close(QF.rorq_quantize(x, t, d, z, 4)[-2:], [0.66, -9.24])
    # fixed mode ignores the NaN threshold: 12 -> band 1 (Δ=0.8, z=0) = 12
    close(QF.rorq_quantize(x, t, d, z, 4, faithful=False)[-2:], [12.0, -9.24])


def test_rorq_gaussian_case():
    g = np.random.default_rng(0).standard_normal(4000)
    g[:5] = [25, -18, 9, 7.5, -6]
    x = torch.from_numpy(g).float()
    t, d, z = QF.rorq_calibrate(x, 4)
    close(t, [3.156837, 31.793827])
    close(d, [0.412036, 2.866667])
    close(z, [8, 6])
    assert QF.rorq_band_ids(x, t, 2).bincount().tolist() == [3991, 9]
    y = QF.rorq_quantize(x, t, d, z, 4)
    close(y[:5], [25.8, -17.2, 8.6, 8.6, -5.733333])
    assert ((y - x)**2).sum() / (x**2).sum() == pytest.approx(0.0121, abs=5e-4)
    close(QF.rorq_quantize(T([30.0, -40.0]), t, d, z, 4), [25.8, -3.296291])


def test_rorq_all_zero_input_single_band():
    t, d, z = QF.rorq_calibrate(torch.zeros(10), 4)
    assert t.tolist() == [0.0] and z.tolist() == [0.0] and d.item() > 0


# ------------------------------------------------- percentile / searches
def test_quantile_matches_numpy_and_per_channel():
    x = torch.randn(3, 257, generator=torch.Generator().manual_seed(0))
    for p in (0.0, 0.01, 0.5, 0.9999, 1.0):
        ref = np.quantile(x.numpy().astype(np.float64), p)
        assert QF.quantile(x, p).item() == pytest.approx(ref, abs=1e-5)
        ref_c = np.quantile(x.numpy().astype(np.float64), p, axis=1)
        close(QF.quantile(x, p, ch_axis=0), ref_c)
    lo, hi = QF.percentile_range(torch.arange(101.0), 0.99)
    assert (lo.item(), hi.item()) == pytest.approx((1.0, 99.0))
    with pytest.raises(ValueError, match='1.5'):
        QF.quantile(x, 1.5)


def test_quantile_above_torch_limit():
    # 101 values each repeated 166112 times: N = 16,777,312 > 2^24
    x = (torch.arange(101 * 166112) % 101).float()
    assert QF.quantile(x, 0.5).item() == 50.0
    assert QF.quantile(x, 0.25).item() == 25.0


def test_mse_scale_search_hand():
    # 2-bit sym: levels {-2Δ, -Δ, 0, Δ}; with Δ0 = 3 (absmax 3)
    # row 0: c=1 -> err 4·1.4² = 7.84; c=0.5 (Δ=1.5) -> 4·0.01 + 1.5² = 2.29
    # row 1: c=1 -> 4·0.9² = 3.24;  c=0.5 -> 4·0.6² + 1.5² = 3.69
    x = T([[1.4] * 4 + [3.0], [0.9] * 4 + [3.0]])
    s, z = QF.mse_scale_search(x, 2, True, ch_axis=0, grid=[0.5, 1.0])
    close(s, [1.5, 3.0])
    assert z is None
    # default grid i/100: err 4(1.4-Δ)² + (3-Δ)² is minimal at Δ=1.72 -> c=.57
    s, _ = QF.mse_scale_search(x[0], 2, True)
    close(s, 1.71)
    # asym [0, 3] (Δ0=1): c=1 -> 4·0.4² = 0.64 beats c=0.5 -> 2.29
    s, z = QF.mse_scale_search(T([0.0, 1.4, 1.4, 1.4, 1.4, 3.0]), 2, False,
                               grid=[0.5, 1.0])
    close(s, 1.0)
    close(z, 0.0)


def test_pdquant_weight_search_hand():
    # 2 bits, num=2: ch0 [0..3] exact at i=2, z=0; ch1 [-3..0] at i=2, z=3
    w = T([[0.0, 1.0, 2.0, 3.0], [-3.0, -2.0, -1.0, 0.0]])
    s, z = QF.pdquant_weight_search(w, 2, ch_axis=0, num=2)
    close(s, [1.0, 1.0])
    close(z, [0.0, 3.0])
