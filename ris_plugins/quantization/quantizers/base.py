"""Common interface of all fake quantizers (the calibration engine's API).

Parameters live in float32 buffers that are empty until :meth:`init_params`
(or ``load_state_dict``) fills them, so ``state_dict`` round-trips exactly,
per-channel shapes included. Design follows the observer / fake-quant split
of mmrazor and ``torch.ao`` (neither is used).
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

MIN_BITS, MAX_BITS = 2, 16

#: The one default of ``faithful`` (quantizer classes and ``quant_cfg``):
#: False = the default mode (PTQ4RIS quirks fixed); True reproduces the
#: official PTQ4RIS arithmetic (``configs/_base_/quantization/
#: ptq4ris_faithful.py`` sets it).
DEFAULT_FAITHFUL = False


def check_bits(bits: int, name: str = 'bits') -> int:
    """Return ``bits`` if it is an int in [2, 16] (the one bit-width check
    of quantizers and ``quant_cfg``).

    Args:
        name: what to call the value in the error (e.g.
            ``'quant_cfg.w_bits'``).

    Raises:
        ValueError: otherwise, naming ``name``, the value and the valid
            range.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not (
            MIN_BITS <= bits <= MAX_BITS):
        raise ValueError(f'{name} must be an int in [{MIN_BITS}, '
                         f'{MAX_BITS}], got {bits!r}')
    return bits


def check_choice(key: str, value: str, options: Sequence[str]) -> str:
    """Raises ValueError naming ``key``/``value`` and the valid options."""
    if value not in options:
        raise ValueError(f'unknown {key}={value!r}; valid options: '
                         f'{list(options)}')
    return value


class BaseQuantizer(nn.Module):
    """Fake quantizer: ``forward(x)`` returns x while disabled or not
    calibrated, else the fake-quantized x (same shape, x's dtype).

    Attributes set by the engine: ``enabled`` (bool, default False) and
    ``name`` (str, used in error messages).

    Candidate API for output-aware search: :meth:`num_candidates`,
    :meth:`fake_quant_candidate`, :meth:`select` and :attr:`group_shape`.

    Args:
        bits: bit width, int in [2, 16].
        param_names: names of the calibrated float32 buffers.

    Raises:
        ValueError: bad ``bits``.
    """

    def __init__(self, bits: int, param_names: Sequence[str] = ()) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.enabled = False
        self.name = ''
        self._param_names: Tuple[str, ...] = tuple(param_names)
        for n in self._param_names:
            self.register_buffer(n, torch.empty(0))

    # ----------------------------------------------------------- state
    @property
    def calibrated(self) -> bool:
        """True once every parameter buffer holds values."""
        return all(
            getattr(self, n).numel() > 0 for n in self._param_names)

    def _where(self) -> str:
        return f" in quantizer '{self.name}'" if self.name else ''

    def _set_params(self, **params: Tensor) -> None:
        """Replace parameter buffers (float32, on the module's device)."""
        for n, v in params.items():
            dev = getattr(self, n).device
            self._buffers[n] = v.detach().to(dev, torch.float32).clone()

    def _expected_shape(self, name: str) -> Optional[Tuple[int, ...]]:
        """Shape a loaded parameter must have (None: any). Default: the
        current shape once calibrated, else ``group_shape`` if known."""
        if self.calibrated:
            return tuple(getattr(self, name).shape)
        return self._known_group_shape()

    def _known_group_shape(self) -> Optional[Tuple[int, ...]]:
        return ()

    def _check_loaded(self, params: Dict[str, Tensor]) -> Optional[str]:
        """Consistency check across the loaded parameters (subclasses)."""
        return None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        loaded = {}
        for n in self._param_names:
            key = prefix + n
            if key not in state_dict:
                continue
            t = state_dict[key]
            exp = self._expected_shape(n)
            if not isinstance(t, Tensor):
                error_msgs.append(f'quantization parameter {key!r} must be '
                                  f'a Tensor, got {type(t).__name__}')
                return
            if t.numel() > 0 and exp is not None and tuple(t.shape) != exp:
                error_msgs.append(
                    f'quantization parameter {key!r} has shape '
                    f'{tuple(t.shape)} but {type(self).__name__}'
                    f'{self._where()} expects {exp}')
                return
            loaded[n] = t
        msg = self._check_loaded(loaded)
        if msg:
            error_msgs.append(f'quantization parameters under {prefix!r}: '
                              f'{msg}')
            return
        for n, t in loaded.items():  # resize so super() can copy_ exactly
            own = getattr(self, n)
            self._buffers[n] = torch.empty(t.shape, dtype=own.dtype,
                                           device=own.device)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)

    # ----------------------------------------------------- calibration
    def init_params(self, x: Tensor) -> None:
        """Compute the parameters from the whole calibration tensor x.

        Raises:
            ValueError: NaN or Inf in x, or a shape the quantizer can't use.
        """
        x = x.detach()
        if x.numel() == 0:
            raise ValueError(f'empty calibration input{self._where()}')
        if not torch.isfinite(x).all():
            raise ValueError(f'NaN or Inf in calibration input{self._where()}'
                             f' (shape {tuple(x.shape)})')
        self._init_params(x.float())

    def _init_params(self, x: Tensor) -> None:
        raise NotImplementedError

    # --------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        if not self.enabled or not self.calibrated:
            return x
        return self.quantize(x)

    def quantize(self, x: Tensor) -> Tensor:
        """Fake-quantize x with the current parameters (ignores enabled)."""
        self._require_calibrated()
        return self._quantize(x.float()).to(x.dtype)

    def _quantize(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _require_calibrated(self) -> None:
        if not self.calibrated:
            raise RuntimeError(f'{type(self).__name__}{self._where()} is not '
                               'calibrated: call init_params(x) first')

    # --------------------------------------------------- candidate API
    @property
    def group_shape(self) -> Tuple[int, ...]:
        """Shape of one candidate choice: () per tensor, (C,) per channel,
        (H,) per head."""
        shape = self._known_group_shape()
        if shape is None:
            self._require_calibrated()
        return shape

    def num_candidates(self) -> int:
        """Number of search candidates (0: no search)."""
        return 0

    def fake_quant_candidate(self, x: Tensor, i: int) -> Tensor:
        """x fake-quantized with candidate i, state unchanged."""
        raise RuntimeError(f'{type(self).__name__}{self._where()} has no '
                           'search candidates')

    def select(self, idx: Tensor) -> None:
        """Set the parameters to candidate ``idx`` (LongTensor, group_shape)."""
        raise RuntimeError(f'{type(self).__name__}{self._where()} has no '
                           'search candidates')

    def _check_candidate(self, i: int) -> None:
        self._require_calibrated()
        n = self.num_candidates()
        if not 0 <= int(i) < n:
            raise IndexError(f'candidate {i} out of range [0, {n}) for '
                             f'{type(self).__name__}{self._where()}')

    def _check_select(self, idx: Tensor) -> Tensor:
        self._require_calibrated()
        idx = torch.as_tensor(idx)
        if tuple(idx.shape) != tuple(self.group_shape):
            raise ValueError(f'select index shape {tuple(idx.shape)} != '
                             f'group_shape {tuple(self.group_shape)}'
                             f'{self._where()}')
        n = self.num_candidates()
        if idx.numel() and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f'select index out of range [0, {n})'
                             f'{self._where()}')
        return idx.long()
