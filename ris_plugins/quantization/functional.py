"""Pure fake-quantization functions (quantize -> dequantize, float32).

Sources (formulas as written in ``docs/ptq4ris.md`` §3-§6):
PTQ4RIS (Jiang et al., ICRA 2025, arXiv 2409.17020; ``gugu511yy/PTQ4RIS``
``ptq4vit_utils/quant_bert.py`` ``BERTVARActQuantizer``), PTQ4ViT (Yuan et
al., ECCV 2022; ``hahnyuan/PTQ4ViT`` ``quant_layers/{matmul,linear}.py``),
PD-Quant (Liu et al., CVPR 2023; ``hustvl/PD-Quant`` ``quant/quant_layer.py``)
and OMSE (Choukroun et al., ICCVW 2019, MSE-optimal clipping).
``round`` is ``torch.round`` (half to even) everywhere. ``ch_axis=None``
means one parameter per tensor; otherwise one per index along ``ch_axis``
and parameters have shape (C,).
"""
import math
import warnings
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

#: PTQ4ViT's fixed |min GELU| used for the negative DRQ-GELU step.
GELU_NEG_MAX = 0.16997124254703522
Scalar = Union[float, Tensor]


def reduce_view(x: Tensor, ch_axis: Optional[int]) -> Tensor:
    """(...) -> (N,) per tensor or (C, N) with channels along ``ch_axis``."""
    if ch_axis is None:
        return x.reshape(-1)
    return x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1)


def expand_param(p: Tensor, x: Tensor, ch_axis: Optional[int]) -> Tensor:
    """Reshape a (C,) parameter so it broadcasts along ``ch_axis`` of x."""
    if ch_axis is None or p.dim() == 0:
        return p
    shape = [1] * x.dim()
    shape[ch_axis] = -1
    return p.reshape(shape)


def quantize_sym(x: Tensor, scale: Scalar, bits: int) -> Tensor:
    """Q_sym = clamp(round(x/Δ), -q, q-1)·Δ, q = 2^(bits-1) (§3).

    ``scale`` is a number or a tensor broadcastable to x (any shape)."""
    q = 2**(bits - 1)
    return torch.clamp(torch.round(x / scale), -q, q - 1) * scale


def quantize_asym(x: Tensor, scale: Scalar, zero_point: Scalar,
                  bits: int) -> Tensor:
    """Q_asym = (clamp(round(x/Δ) + z, 0, 2^b - 1) - z)·Δ (§3)."""
    return (torch.clamp(torch.round(x / scale) + zero_point, 0,
                        2**bits - 1) - zero_point) * scale


def asym_qparams(xmin: Tensor, xmax: Tensor, bits: int,
                 eps: float = 1e-8) -> Tuple[Tensor, Tensor]:
    """(Δ, z) from a range [m, M] that is widened to include 0 (§3).

    Returns tensors shaped like ``xmin``; z is an integer-valued float."""
    levels = 2**bits - 1
    lo = torch.clamp(xmin, max=0)
    hi = torch.clamp(xmax, min=0)
    scale = torch.clamp((hi - lo) / levels, min=eps)
    zero_point = torch.clamp(-torch.round(lo / scale), 0, levels)
    return scale, zero_point


def sym_scale(absmax: Tensor, bits: int, ptq4vit: bool = False,
              eps: float = 1e-8) -> Tensor:
    """Symmetric step from max|x|: absmax/(q-1) (min-max) or absmax/(q-0.5)
    (PTQ4ViT initial step, §6). Clamped below at ``eps``."""
    q = 2**(bits - 1)
    return torch.clamp(absmax / (q - 0.5 if ptq4vit else q - 1), min=eps)


def ptq4vit_grid(start: float = 0.01, stop: float = 1.2,
                 num: int = 100) -> Tensor:
    """PTQ4ViT multipliers c_i = start + i·(stop-start)/num, i < num (§6).

    The default runs 0.01..1.1881; ``stop`` itself is never a candidate.
    Returns a float32 tensor (num,)."""
    return torch.tensor([start + i * (stop - start) / num
                         for i in range(num)], dtype=torch.float32)


def twin_uniform_softmax(x: Tensor, split: Scalar, bits: int,
                         faithful: bool = True) -> Tensor:
    """DRQ-softmax twin-uniform quantizer for post-Softmax x in [0, 1] (§4.1).

    Δ_lo = s/(q-1). ``faithful=True`` is the upstream sum of two clamped
    quantizers (PTQ4ViT ``quant_input_A``), including the +s offset for
    x >= s and Q(0) = round(s(q-1))/(q-1). ``faithful=False`` is the intended
    piecewise quantizer: x < s -> clamp(round(x/Δ_lo), 0, q-1)·Δ_lo and
    x >= s -> clamp(round(x(q-1)), 0, q-1)/(q-1); then Q(0) = 0.
    ``split`` is a number or a tensor broadcastable to x.
    """
    q1 = 2**(bits - 1) - 1
    s = torch.as_tensor(split, dtype=x.dtype, device=x.device)
    d_lo = s / q1
    if faithful:
        high = torch.clamp(torch.round(torch.maximum(x, s).clamp(max=1) * q1),
                           0, q1) / q1
        low = torch.clamp(torch.round(torch.minimum(x.clamp(min=0), s) / d_lo),
                          0, q1) * d_lo
        return high + low
    low = torch.clamp(torch.round(x / d_lo), 0, q1) * d_lo
    high = torch.clamp(torch.round(x * q1), 0, q1) / q1
    return torch.where(x < s, low, high)


def twin_uniform_gelu(x: Tensor, pos_scale: Scalar, bits: int) -> Tensor:
    """DRQ-GELU: Q = clamp(round(x/Δ+), 0, q-1)Δ+ + clamp(round(x/Δ-), -q, 0)Δ-
    with the fixed Δ- = 0.16997124254703522/q (§4.2, PTQ4ViT
    ``PostGeluPTQSLBatchingQuantLinear``)."""
    q = 2**(bits - 1)
    d_neg = torch.tensor(GELU_NEG_MAX / q, dtype=x.dtype, device=x.device)
    pos = torch.clamp(torch.round(x / pos_scale), 0, q - 1) * pos_scale
    neg = torch.clamp(torch.round(x / d_neg), -q, 0) * d_neg
    return pos + neg


def rorq_calibrate(x: Tensor, bits: int, k: float = 3.0, max_bands: int = 10,
                   eps: float = 1e-8) -> Tuple[Tensor, Tensor, Tensor]:
    """RORQ banding (§4.3): per band t = mean|V| + k·std_unbiased|V| over the
    remaining non-zeros V; every band but the last is fitted on R[not O]
    (zeros left by earlier bands included), the last on V only.

    Args:
        x: calibration tensor, any shape (flattened, computed in float32).
    Returns:
        thresholds T, steps D, zero points Z, each float32 (K,), K <= max_bands.
        A single remaining element gives a NaN threshold (as upstream).
        Deviations needed to stay finite (never hit by non-degenerate data):
        an all-zero x gives one band T=[0], D=[eps], Z=[0]; a band whose values
        are all equal (Δ = 0) is fitted on its range widened to include 0.
    """
    r = x.detach().reshape(-1).to(torch.float32).clone()
    levels = 2**bits - 1
    ts, ds, zs = [], [], []
    for _ in range(max_bands):
        v = r[r != 0]
        if v.numel() == 0:
            break
        a = v.abs()
        with warnings.catch_warnings():  # 1 element: unbiased var is NaN
            warnings.simplefilter('ignore')
            t = a.mean() + k * a.var().sqrt()
        r_abs = r.abs()
        outliers = r_abs > t
        inliers = v if t > r_abs.max() else r[~outliers]
        lo, hi = inliers.min(), inliers.max()
        d = (hi - lo) / levels
        if d == 0:
            lo, hi = lo.clamp(max=0), hi.clamp(min=0)
            d = torch.clamp((hi - lo) / levels, min=eps)
        ts.append(t)
        ds.append(d)
        zs.append(torch.round(-lo / d))
        r[~outliers] = 0
    if not ts:
        return (torch.zeros(1), torch.full((1, ), eps), torch.zeros(1))
    return torch.stack(ts), torch.stack(ds), torch.stack(zs)


def rorq_band_ids(x: Tensor, thresholds: Tensor, num_bands: int,
                  faithful: bool = True) -> Tensor:
    """Band id per element, int64 like x (§4.3 forward).

    faithful: g = i if T[i-1] < |x| <= T[i] (i >= 1) else 0, so |x| > T_last
    and NaN thresholds fall back to band 0. Fixed: g = #{finite T_i < |x|}
    (NaN thresholds never count), so |x| above the last finite threshold goes
    to the last band. Both are clamped to [0, num_bands - 1].
    """
    a = x.abs()
    g = torch.zeros_like(x, dtype=torch.long)
    t = thresholds.to(x.dtype)
    for i in range(t.numel()):
        if faithful and i >= 1:
            g += ((a > t[i - 1]) & (a <= t[i])).long() * i
        elif not faithful and not torch.isnan(t[i]):
            g += (a > t[i]).long()
    return g.clamp(0, num_bands - 1)


def rorq_quantize(x: Tensor, thresholds: Tensor, scales: Tensor,
                  zero_points: Tensor, bits: int,
                  faithful: bool = True) -> Tensor:
    """y = Q_asym(x; D[g], Z[g], b) with g from :func:`rorq_band_ids`.

    ``thresholds``/``scales``/``zero_points``: (K,) from :func:`rorq_calibrate`.
    """
    g = rorq_band_ids(x, thresholds, scales.numel(), faithful)
    d = scales.to(x.dtype)[g]
    z = zero_points.to(x.dtype)[g]
    return quantize_asym(x, d, z, bits)


def quantile(x: Tensor, p: float, ch_axis: Optional[int] = None) -> Tensor:
    """Linear-interpolated quantile (as ``torch.quantile``) without its 16M
    element limit, via ``torch.kthvalue``. Returns () or (C,).

    Raises:
        ValueError: p outside [0, 1] or x empty.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f'quantile p={p} must lie in [0, 1]')
    v = reduce_view(x.detach().float(), ch_axis)  # (N,) or (C, N)
    n = v.shape[-1]
    if n == 0:
        raise ValueError('quantile of an empty tensor')
    pos = p * (n - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, n - 1)
    v_lo = torch.kthvalue(v, lo + 1, dim=-1).values
    v_hi = torch.kthvalue(v, hi + 1, dim=-1).values
    return v_lo + (pos - lo) * (v_hi - v_lo)


def quantile_ptq4ris(x: Tensor, p: float) -> Tensor:
    """Per-tensor quantile as the official PTQ4RIS BERT-matmul quantizer
    computes it (``gugu511yy/PTQ4RIS`` ``ptq4vit_utils/quant_bert.py``
    ``UniformQuantizer``): ``torch.quantile`` (linear interpolation, x's
    dtype) and, above its 2^24-element limit, numpy's percentile at
    ``100·p`` in float64 cast to float32. Returns a () tensor."""
    v = x.detach().float().reshape(-1)
    if v.numel() <= 2**24:
        return torch.quantile(v, p)
    value = np.percentile(v.cpu().numpy(), p * 100)
    return torch.tensor(value, dtype=torch.float32, device=x.device)


def percentile_qparams_ptq4ris(x: Tensor, p: float,
                               bits: int) -> Tuple[Tensor, Tensor]:
    """(Δ, z) of the official PTQ4RIS BERT-matmul percentile candidate
    (§5.2): m = quantile(x, 1-p), M = quantile(x, p), Δ = (M - m)/(2^b - 1),
    z = round(-m/Δ), with the range NOT widened to include 0 and z NOT
    clamped to [0, 2^b - 1] (so z < 0 when m > 0).

    Deviation kept for safety: where M = m (constant or all-zero x, where
    the official Δ = 0 gives NaN), the range is widened to include 0 and
    handled as :func:`asym_qparams` (finite Δ, exact on the constant).
    Returns () tensors.
    """
    lo, hi = quantile_ptq4ris(x, 1.0 - p), quantile_ptq4ris(x, p)
    if not hi > lo:
        return asym_qparams(lo, hi, bits)
    scale = (hi - lo) / (2**bits - 1)
    return scale, torch.round(-lo / scale)


def percentile_range(x: Tensor, p: float,
                     ch_axis: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """(quantile(x, 1-p), quantile(x, p)), e.g. p = 0.9999 (§5.2)."""
    return quantile(x, 1.0 - p, ch_axis), quantile(x, p, ch_axis)


def group_error(x: Tensor, xq: Tensor, ch_axis: Optional[int],
                p: float = 2.0) -> Tensor:
    """Mean |x - xq|^p per group: () or (C,)."""
    return reduce_view((x - xq).abs().pow(p), ch_axis).mean(-1)


def mse_scale_search(x: Tensor, bits: int, symmetric: bool = True,
                     ch_axis: Optional[int] = None,
                     grid: Optional[Sequence[float]] = None
                     ) -> Tuple[Tensor, Optional[Tensor]]:
    """OMSE: per group, the step c·Δ0 (c in ``grid``, default i/100 for
    i = 1..100) minimising ||x - Q(x)||², Δ0 the min-max step. Asymmetric
    candidates use the range [c·m⁻, c·M⁺] (§3). Ties keep the first c.

    Returns:
        (scale, zero_point) each () or (C,); zero_point is None if symmetric.
    """
    x = x.detach().float()
    v = reduce_view(x, ch_axis)
    cs = torch.arange(1, 101).float() / 100 if grid is None else grid
    mn, mx = v.min(-1).values, v.max(-1).values
    best = best_s = best_z = None
    for c in cs:
        if symmetric:
            s, z = sym_scale(torch.maximum(-mn, mx) * float(c), bits), None
            xq = quantize_sym(x, expand_param(s, x, ch_axis), bits)
        else:
            s, z = asym_qparams(mn * float(c), mx * float(c), bits)
            xq = quantize_asym(x, expand_param(s, x, ch_axis),
                               expand_param(z, x, ch_axis), bits)
        err = group_error(x, xq, ch_axis)
        if best is None:
            best, best_s, best_z = err, s, z
            continue
        better = err < best
        best = torch.where(better, err, best)
        best_s = torch.where(better, s, best_s)
        if z is not None:
            best_z = torch.where(better, z, best_z)
    return best_s, best_z


def pdquant_weight_search(w: Tensor, bits: int, ch_axis: int = 0,
                          num: int = 100,
                          p: float = 2.4) -> Tuple[Tensor, Tensor]:
    """PD-Quant 2-D search (§5.1), per channel along ``ch_axis``: for
    i = 1..num and z = 0..2^b-1, range [-zδ, r - zδ] with r = (M⁺-m⁻)·i/num,
    δ = r/(2^b-1); keep the lowest mean |w - Q(w)|^p (first on ties).
    Cost: num·2^b quantizations of w (meant for weights).

    Returns:
        (scale, zero_point), each (C,).
    """
    w = w.detach().float()
    v = reduce_view(w, ch_axis)  # (C, N)
    levels = 2**bits - 1
    rng = v.max(-1).values.clamp(min=0) - v.min(-1).values.clamp(max=0)
    best = torch.full_like(rng, float('inf'))
    best_lo, best_hi = torch.zeros_like(rng), rng.clone()
    for i in range(1, num + 1):
        hi0 = rng / num * i
        delta = hi0 / levels
        for zp in range(levels + 1):
            lo, hi = -zp * delta, hi0 - zp * delta
            s, z = asym_qparams(lo, hi, bits)
            err = (v - quantize_asym(v, s[:, None], z[:, None], bits)
                   ).abs().pow(p).mean(-1)
            better = err < best
            best = torch.where(better, err, best)
            best_lo = torch.where(better, lo, best_lo)
            best_hi = torch.where(better, hi, best_hi)
    return asym_qparams(best_lo, best_hi, bits)
