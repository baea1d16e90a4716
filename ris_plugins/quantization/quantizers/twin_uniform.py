"""PTQ4RIS DRQ: twin-uniform quantizers for post-Softmax and post-GELU.

Sources: ``docs/ptq4ris.md`` §4.1, §4.2 and §6; PTQ4ViT (Yuan et al., ECCV
2022) ``hahnyuan/PTQ4ViT`` ``quant_layers/matmul.py``
(``SoSPTQSLBatchingQuantMatMul``) and ``quant_layers/linear.py``
(``PostGeluPTQSLBatchingQuantLinear``), as used by ``gugu511yy/PTQ4RIS``.
"""
from typing import Tuple

import torch
from torch import Tensor

from .. import functional as QF
from ..registry import QUANTIZERS
from .base import DEFAULT_FAITHFUL, BaseQuantizer


@QUANTIZERS.register_module()
class TwinUniformSoftmaxQuantizer(BaseQuantizer):
    """DRQ-softmax for attention probabilities in [0, 1], any shape.

    One split s = 2^-i (i = 0..num_splits-1) per layer, shared by all heads
    and windows; low region [0, s) has step s/(q-1), high region [s, 1] has
    step 1/(q-1) (q = 2^(b-1)). ``init_params`` picks the split with the
    lowest MSE on x (first on ties); candidate i is split 2^-i.

    Args:
        bits: int in [2, 16].
        faithful: default ``DEFAULT_FAITHFUL`` (False). True = upstream
            sum-of-clamps arithmetic (+s offset for
            x >= s, Q(0) = round(s(q-1))/(q-1)); False = the intended
            piecewise quantizer (Q(0) = 0, no offset). See
            :func:`ris_plugins.quantization.functional.twin_uniform_softmax`.
        num_splits: number of power-of-two splits (20 upstream).

    Raises:
        ValueError: bad bits or num_splits < 1.
    """

    def __init__(self, bits: int = 8, faithful: bool = DEFAULT_FAITHFUL,
                 num_splits: int = 20) -> None:
        super().__init__(bits, ('split', ))
        if int(num_splits) < 1:
            raise ValueError(f'num_splits={num_splits} must be >= 1')
        self.faithful = bool(faithful)
        self.num_splits = int(num_splits)

    def _split_of(self, i) -> Tensor:
        return torch.pow(2.0, -torch.as_tensor(i, dtype=torch.float32))

    def _fq(self, x: Tensor, split: Tensor) -> Tensor:
        return QF.twin_uniform_softmax(x, split.to(x.device), self.bits,
                                       self.faithful)

    def _init_params(self, x: Tensor) -> None:
        errs = torch.stack([((x - self._fq(x, self._split_of(i)))**2).mean()
                            for i in range(self.num_splits)])
        self._set_params(split=self._split_of(int(torch.argmin(errs))))

    def _quantize(self, x: Tensor) -> Tensor:
        return self._fq(x, self.split)

    @property
    def low_scale(self) -> Tensor:
        """Δ_lo = split/(q-1) (upstream ``A_interval``)."""
        self._require_calibrated()
        return self.split / (2**(self.bits - 1) - 1)

    def num_candidates(self) -> int:
        return self.num_splits

    def fake_quant_candidate(self, x: Tensor, i: int) -> Tensor:
        self._check_candidate(i)
        return self._fq(x.float(), self._split_of(int(i))).to(x.dtype)

    def select(self, idx: Tensor) -> None:
        self._set_params(split=self._split_of(self._check_select(idx)))

    def extra_repr(self) -> str:
        s = f'bits={self.bits}, faithful={self.faithful}, granularity=tensor'
        if self.calibrated:
            s += f', split=2^{int(torch.log2(self.split).item())}'
        return s


@QUANTIZERS.register_module()
class TwinUniformGELUQuantizer(BaseQuantizer):
    """DRQ-GELU for post-GELU activations, any shape, per tensor.

    Positive step Δ+ (``pos_scale``) is calibrated; the negative step is the
    fixed Δ- = 0.16997124254703522/q (never searched). ``init_params`` sets
    Δ+ = max(x)/(q-0.5) with the *signed* max (PTQ4ViT initial step);
    candidate i = ``grid[i]`` × that initial step, grid =
    ``ptq4vit_grid(*search_grid)``.

    Args:
        bits: int in [2, 16].
        search_grid: (start, stop, num) of the candidate multipliers.

    Raises:
        ValueError: bad bits.
    """

    def __init__(self, bits: int = 8,
                 search_grid: Tuple[float, float, int] = (0.01, 1.2, 100),
                 eps: float = 1e-8) -> None:
        super().__init__(bits, ('pos_scale', ))
        self.search_grid = tuple(search_grid)
        self.eps = eps
        self.register_buffer('_grid', QF.ptq4vit_grid(*search_grid),
                             persistent=False)
        self.register_buffer('_init_scale', torch.empty(0), persistent=False)

    @property
    def neg_scale(self) -> float:
        """Fixed negative step Δ- = 0.16997124254703522/q."""
        return QF.GELU_NEG_MAX / 2**(self.bits - 1)

    def _init_params(self, x: Tensor) -> None:
        q = 2**(self.bits - 1)
        s = torch.clamp(x.max() / (q - 0.5), min=self.eps)  # signed max
        self._set_params(pos_scale=s)
        self._init_scale = self.pos_scale.clone()

    def _quantize(self, x: Tensor) -> Tensor:
        return QF.twin_uniform_gelu(x, self.pos_scale, self.bits)

    def num_candidates(self) -> int:
        return int(self._grid.numel())

    def _require_init(self) -> None:
        if self._init_scale.numel() == 0:
            raise RuntimeError(f'TwinUniformGELUQuantizer{self._where()}: '
                               'candidates need init_params(x) first')

    def fake_quant_candidate(self, x: Tensor, i: int) -> Tensor:
        self._check_candidate(i)
        self._require_init()
        s = self._grid[int(i)] * self._init_scale
        return QF.twin_uniform_gelu(x.float(), s, self.bits).to(x.dtype)

    def select(self, idx: Tensor) -> None:
        idx = self._check_select(idx)
        self._require_init()
        self._set_params(pos_scale=self._grid[idx.to(self._grid.device)] *
                         self._init_scale)

    def extra_repr(self) -> str:
        s = f'bits={self.bits}, granularity=tensor'
        if self.calibrated:
            s += (f', pos_scale={self.pos_scale.item():.6g}, '
                  f'neg_scale={self.neg_scale:.6g}')
        return s
