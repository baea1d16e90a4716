"""Uniform (symmetric or asymmetric) fake quantizer with observers.

Sources: ``docs/ptq4ris.md`` §3 (Q_sym / Q_asym), §5.1 (PD-Quant search,
``hustvl/PD-Quant`` ``quant/quant_layer.py``), §5.2 (percentile search,
RepQ-ViT style) and §6 (PTQ4ViT initial step and grid,
``hahnyuan/PTQ4ViT`` ``quant_layers/linear.py``); OMSE (Choukroun et al.,
ICCVW 2019).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .. import functional as QF
from ..registry import QUANTIZERS
from .base import DEFAULT_FAITHFUL, BaseQuantizer, check_choice


@QUANTIZERS.register_module()
class UniformQuantizer(BaseQuantizer):
    """Uniform fake quantizer, per tensor, per channel or per head.

    Symmetric: ``Q_sym(x; Δ, b)`` (signed, levels -q..q-1, q = 2^(b-1));
    asymmetric: ``Q_asym(x; Δ, z, b)`` with an integer zero point.

    Observers (``init_params``), one Δ (and z) per group:

    - ``minmax``: Δ = max|x|/(q-1) (sym) or §3 from [min, max] (asym);
    - ``ptq4vit``: Δ = max|x|/(q-0.5) (PTQ4ViT initial step; sym only);
    - ``percentile``: range from quantiles at ``percentile`` (sym: quantile of
      |x|); a sequence of percentiles keeps the lowest MSE per group, the
      first on ties (§5.2). With ``faithful=True`` (asymmetric, per
      tensor) each candidate is the official PTQ4RIS BERT-matmul one
      (:func:`~ris_plugins.quantization.functional.percentile_qparams_ptq4ris`:
      range not widened to include 0, zero point not clamped);
    - ``omse``: MSE-optimal clipping c·Δ_minmax, c = i/100 (OMSE);
    - ``pdquant``: PD-Quant 2-D Lp-2.4 search (§5.1; asymmetric only).

    Search candidates: candidate i = ``grid[i]`` × the observer's step, with
    ``grid = ptq4vit_grid(*search_grid)``; the zero point stays fixed.
    ``search_grid=None``: no candidates (the observer's step is final, as
    for the official PTQ4RIS BERT-matmul quantizers, which are never
    searched).

    Args:
        bits: int in [2, 16].
        symmetric: signed symmetric (True) or asymmetric with zero point.
        granularity: 'tensor', 'channel' or 'head'.
        ch_axis: group axis; default 0 for 'channel' (weights (C_out, ...)),
            1 for 'head' (attention operands (B, H, N, M)).
        observer: see above.
        percentile: float in (0, 1] or a sequence of them.
        search_grid: (start, stop, num) of the candidate multipliers, or
            None for no search candidates.
        num_channels: expected group count (checks calibration input and
            loaded state dicts before calibration).
        faithful: default ``DEFAULT_FAITHFUL`` (False). True = the
            official PTQ4RIS arithmetic where it differs
            from ours; for this quantizer that is only the asymmetric
            per-tensor ``percentile`` observer (above). No effect on
            other observers, symmetric or per-group quantizers (the model
            config passes ``faithful`` to every quantizer).

    Raises:
        ValueError: bad bits, granularity, observer, percentile or
            observer/symmetry combination.

    Shapes: params are () per tensor, (C,) per channel/head.
    """
    GRANULARITIES = ('tensor', 'channel', 'head')
    OBSERVERS = ('minmax', 'ptq4vit', 'percentile', 'omse', 'pdquant')

    def __init__(self,
                 bits: int = 8,
                 symmetric: bool = True,
                 granularity: str = 'tensor',
                 ch_axis: Optional[int] = None,
                 observer: str = 'minmax',
                 percentile: Union[float, Sequence[float]] = 0.9999,
                 search_grid: Optional[Tuple[float, float, int]] = (
                     0.01, 1.2, 100),
                 num_channels: Optional[int] = None,
                 faithful: bool = DEFAULT_FAITHFUL) -> None:
        check_choice('granularity', granularity, self.GRANULARITIES)
        check_choice('observer', observer, self.OBSERVERS)
        if observer == 'ptq4vit' and not symmetric:
            raise ValueError("observer='ptq4vit' needs symmetric=True")
        if observer == 'pdquant' and symmetric:
            raise ValueError("observer='pdquant' needs symmetric=False")
        super().__init__(bits, ('scale', ) if symmetric else
                         ('scale', 'zero_point'))
        self.symmetric = symmetric
        self.granularity = granularity
        self.observer = observer
        if granularity == 'tensor':
            self.ch_axis = None
        else:
            self.ch_axis = ch_axis if ch_axis is not None else (
                0 if granularity == 'channel' else 1)
        ps = (percentile, ) if isinstance(percentile, (int, float)) else tuple(
            percentile)
        if not ps or any(not 0.0 < float(p) <= 1.0 for p in ps):
            raise ValueError(f'percentile={percentile!r} must be a float in '
                             '(0, 1] or a non-empty sequence of them')
        self.percentiles = tuple(float(p) for p in ps)
        self.num_channels = num_channels
        self.faithful = bool(faithful)
        self.search_grid = None if search_grid is None else tuple(
            search_grid)
        grid = (torch.empty(0) if search_grid is None else
                QF.ptq4vit_grid(*search_grid))
        self.register_buffer('_grid', grid, persistent=False)
        self.register_buffer('_init_scale', torch.empty(0), persistent=False)

    # ----------------------------------------------------------- shapes
    def _known_group_shape(self) -> Optional[Tuple[int, ...]]:
        if self.ch_axis is None:
            return ()
        if self.num_channels is not None:
            return (self.num_channels, )
        return tuple(self.scale.shape) if self.calibrated else None

    def _check_loaded(self, params) -> Optional[str]:
        if 'scale' in params and 'zero_point' in params and \
                params['scale'].shape != params['zero_point'].shape:
            return (f"'scale' {tuple(params['scale'].shape)} and "
                    f"'zero_point' {tuple(params['zero_point'].shape)} differ")
        if self.ch_axis is not None and any(
                t.numel() and t.dim() != 1 for t in params.values()):
            return f'{self.granularity}-wise parameters must be 1-D'
        return None

    def _check_input(self, x: Tensor) -> None:
        if self.ch_axis is None:
            return
        if not -x.dim() <= self.ch_axis < x.dim():
            raise ValueError(f'ch_axis={self.ch_axis} invalid for input of '
                             f'shape {tuple(x.shape)}{self._where()}')
        c = x.shape[self.ch_axis]
        exp = self._known_group_shape()
        if exp is not None and exp != (c, ):
            raise ValueError(
                f'input has {c} {self.granularity}s along axis '
                f'{self.ch_axis} but the quantizer{self._where()} has '
                f'{exp[0]}')

    # ------------------------------------------------------ calibration
    def _init_params(self, x: Tensor) -> None:
        self._check_input(x)
        ax = self.ch_axis
        if self.observer == 'omse':
            s, z = QF.mse_scale_search(x, self.bits, self.symmetric, ax)
        elif self.observer == 'pdquant':
            xx, a = (x.reshape(1, -1), 0) if ax is None else (x, ax)
            s, z = QF.pdquant_weight_search(xx, self.bits, a)
            s, z = (s[0], z[0]) if ax is None else (s, z)
        elif self.observer == 'percentile':
            s, z = self._percentile_search(x)
        else:
            v = QF.reduce_view(x, ax)
            mn, mx = v.min(-1).values, v.max(-1).values
            if self.symmetric:
                s = QF.sym_scale(torch.maximum(-mn, mx), self.bits,
                                 ptq4vit=self.observer == 'ptq4vit')
                z = None
            else:
                s, z = QF.asym_qparams(mn, mx, self.bits)
        self._set_params(scale=s)
        if z is not None:
            self._set_params(zero_point=z)
        self._init_scale = self.scale.clone()

    def _percentile_search(self, x: Tensor):
        best = best_s = best_z = None
        for p in self.percentiles:
            if self.symmetric:
                s = QF.sym_scale(QF.quantile(x.abs(), p, self.ch_axis),
                                 self.bits)
                z = None
            elif self.faithful and self.ch_axis is None:
                s, z = QF.percentile_qparams_ptq4ris(x, p, self.bits)
            else:
                s, z = QF.asym_qparams(
                    *QF.percentile_range(x, p, self.ch_axis), self.bits)
            err = QF.group_error(x, self._fq(x, s, z), self.ch_axis)
            if best is None:
                best, best_s, best_z = err, s, z
                continue
            better = err < best  # ties keep the first percentile
            best = torch.where(better, err, best)
            best_s = torch.where(better, s, best_s)
            best_z = None if z is None else torch.where(better, z, best_z)
        return best_s, best_z

    # ----------------------------------------------------------- forward
    def _fq(self, x: Tensor, scale: Tensor,
            zero_point: Optional[Tensor]) -> Tensor:
        s = QF.expand_param(scale, x, self.ch_axis)
        if self.symmetric:
            return QF.quantize_sym(x, s, self.bits)
        z = QF.expand_param(zero_point, x, self.ch_axis)
        return QF.quantize_asym(x, s, z, self.bits)

    def _quantize(self, x: Tensor) -> Tensor:
        self._check_input(x)
        zp = None if self.symmetric else self.zero_point
        return self._fq(x, self.scale, zp)

    # ----------------------------------------------------- candidate API
    def num_candidates(self) -> int:
        return int(self._grid.numel())

    def _require_init(self) -> None:
        if self._init_scale.numel() == 0:
            raise RuntimeError(f'UniformQuantizer{self._where()}: candidates '
                               'need init_params(x) first (not restored by '
                               'load_state_dict)')

    def fake_quant_candidate(self, x: Tensor, i: int) -> Tensor:
        self._check_candidate(i)
        self._require_init()
        self._check_input(x)
        zp = None if self.symmetric else self.zero_point
        s = self._grid[int(i)] * self._init_scale
        return self._fq(x.float(), s, zp).to(x.dtype)

    def select(self, idx: Tensor) -> None:
        idx = self._check_select(idx)
        self._require_init()
        self._set_params(scale=self._grid[idx.to(self._grid.device)] *
                         self._init_scale)

    def extra_repr(self) -> str:
        s = (f'bits={self.bits}, symmetric={self.symmetric}, '
             f'granularity={self.granularity}')
        if self.ch_axis is not None:
            s += f', ch_axis={self.ch_axis}'
        s += f', observer={self.observer}'
        if self.faithful:
            s += ', faithful=True'
        if not self.calibrated:
            return s + ', calibrated=False'
        sc = self.scale
        return s + (f', scale={sc.item():.6g}' if sc.dim() == 0 else
                    f', scale={tuple(sc.shape)} in '
                    f'[{sc.min().item():.4g}, {sc.max().item():.4g}]')
