"""PTQ4RIS RORQ: outlier-retained banded quantizer for text-encoder Linear
inputs.

Sources: ``docs/ptq4ris.md`` §4.3; ``gugu511yy/PTQ4RIS``
``ptq4vit_utils/quant_bert.py`` (``BERTVARActQuantizer``).
"""
from typing import Optional

from torch import Tensor

from .. import functional as QF
from ..registry import QUANTIZERS
from .base import DEFAULT_FAITHFUL, BaseQuantizer


@QUANTIZERS.register_module()
class RORQQuantizer(BaseQuantizer):
    """Banded asymmetric quantizer, per tensor, any input shape.

    Calibration (:func:`~ris_plugins.quantization.functional.rorq_calibrate`)
    splits |x| into up to ``max_bands`` magnitude bands with thresholds
    t = mean + k·std (unbiased) of the remaining non-zeros; each band has
    its own asymmetric step and zero point. Buffers ``thresholds``,
    ``scales``, ``zero_points`` are float32 (K,). RORQ has no search
    candidates.

    Args:
        bits: int in [2, 16] (codes per band; the band id costs extra bits).
        k: threshold multiplier of the std (3 upstream).
        max_bands: K_max (10 upstream).
        faithful: default ``DEFAULT_FAITHFUL`` (False). True = upstream
            forward: |x| above the last threshold and
            NaN thresholds fall back to band 0 (clipped to band 0's range).
            False = |x| above the last finite threshold goes to the last
            band; NaN thresholds are ignored. Calibration is identical.

    Raises:
        ValueError: bad bits, k <= 0 or max_bands < 1.
    """

    def __init__(self, bits: int = 8, k: float = 3.0, max_bands: int = 10,
                 faithful: bool = DEFAULT_FAITHFUL) -> None:
        super().__init__(bits, ('thresholds', 'scales', 'zero_points'))
        if not k > 0:
            raise ValueError(f'k={k} must be > 0')
        if int(max_bands) < 1:
            raise ValueError(f'max_bands={max_bands} must be >= 1')
        self.k = float(k)
        self.max_bands = int(max_bands)
        self.faithful = bool(faithful)

    def _known_group_shape(self):
        return ()

    def _expected_shape(self, name: str):
        return None  # band count is data dependent: see _check_loaded

    def _check_loaded(self, params) -> Optional[str]:
        shapes = {n: tuple(t.shape) for n, t in params.items()}
        if any(len(s) != 1 for s in shapes.values()) or len(
                set(shapes.values())) > 1:
            return ('RORQ thresholds/scales/zero_points must be 1-D of equal '
                    f'length, got {shapes}')
        if any(s[0] > self.max_bands for s in shapes.values()):
            return f'more bands than max_bands={self.max_bands}: {shapes}'
        return None

    @property
    def num_bands(self) -> int:
        return int(self.scales.numel())

    def _init_params(self, x: Tensor) -> None:
        t, d, z = QF.rorq_calibrate(x, self.bits, self.k, self.max_bands)
        self._set_params(thresholds=t, scales=d, zero_points=z)

    def _quantize(self, x: Tensor) -> Tensor:
        return QF.rorq_quantize(x, self.thresholds, self.scales,
                                self.zero_points, self.bits, self.faithful)

    def band_ids(self, x: Tensor) -> Tensor:
        """Band id of each element of x (int64, x's shape)."""
        self._require_calibrated()
        return QF.rorq_band_ids(x, self.thresholds, self.num_bands,
                                self.faithful)

    @property
    def group_shape(self):
        return ()

    def extra_repr(self) -> str:
        s = (f'bits={self.bits}, k={self.k}, max_bands={self.max_bands}, '
             f'faithful={self.faithful}')
        if self.calibrated:
            s += (f', bands={self.num_bands}, thresholds='
                  f'{[round(v, 4) for v in self.thresholds.tolist()]}')
        return s
