"""Saving and reloading calibrated quantization parameters.

The file is a plain ``torch.save`` of::

    {'meta': {...},                       # what the parameters belong to
     'bits': {quantizer name: int},       # bit width of every quantizer
     'shapes': {parameter key: [int]},    # shape of every parameter
     'state_dict': {parameter key: Tensor}}

holding only tensors, strings, numbers, lists and dicts, so it loads with
``torch.load(weights_only=True)``.  Every load checks the keys, the bit
widths and the shapes against the quantized model (and the file's own
record) before anything is changed.
"""
import hashlib
import os
import os.path as osp
import pickle
import tempfile
from typing import Dict, Optional

import torch
import torch.nn as nn
from torch import Tensor

from .quantize import QuantState

#: Version of the file layout; files without bits / shapes are refused.
FORMAT = 2
PAYLOAD_KEYS = ('meta', 'bits', 'shapes', 'state_dict')


class StaleFormatError(ValueError):
    """A parameter file of the first layout (no bit widths or shapes)."""


def quant_state_dict(state: QuantState) -> Dict[str, Tensor]:
    """``{'<layer>.<quantizer child>.<buffer>': Tensor}`` of every
    quantizer (scales, zero points, splits, RORQ bands)."""
    out = {}
    for name, q in state.quantizers():
        for key, value in q.state_dict().items():
            out[f'{name}.{key}'] = value.detach().clone()
    return out


def quant_bits(state: QuantState) -> Dict[str, int]:
    """``{quantizer name: bit width}`` of every quantizer of ``state``."""
    return {name: int(q.bits) for name, q in state.quantizers()}


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in ``chunk``-byte pieces (hex)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: nn.Module) -> str:
    """SHA-256 over ``model.state_dict()`` (see :func:`tensors_sha256`)."""
    return tensors_sha256(model.state_dict())


def tensors_sha256(tensors: Dict[str, Tensor]) -> str:
    """SHA-256 over a ``{key: Tensor}`` dict: every key, dtype, shape and
    the raw bytes of every tensor, in key order (hex)."""
    digest = hashlib.sha256()
    for key, value in sorted(tensors.items()):
        t = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f'{key}|{t.dtype}|{tuple(value.shape)}|'.encode())
        digest.update(t.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_quant_params(path: str, state: QuantState,
                      meta: Optional[dict] = None) -> None:
    """Write the parameters, their bit widths and shapes atomically
    (temporary file + rename), so an interrupted save never leaves a
    half-written file."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    params = quant_state_dict(state)
    payload = dict(meta=dict(meta or {}, format=FORMAT),
                   bits=quant_bits(state),
                   shapes={k: list(v.shape) for k, v in params.items()},
                   state_dict=params)
    fd, tmp = tempfile.mkstemp(dir=osp.dirname(osp.abspath(path)),
                               suffix='.tmp')
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def read_quant_params(path: str) -> dict:
    """Load a parameter file with ``weights_only=True`` and check its layout.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable (truncated, not a torch file, or holding
            objects the safe loader refuses), not a quantization parameter
            file, a shape record that disagrees with a stored tensor, or
            (:class:`StaleFormatError`) an older file without bit widths
            and shapes; the message names the file.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'quantization parameter file not found: '
                                f'{path}')
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError,
            ValueError) as err:
        raise ValueError(f'cannot read quantization parameter file {path}: '
                         f'{err}') from err
    if isinstance(payload, dict) and set(payload) == {'meta', 'state_dict'}:
        raise StaleFormatError(
            f'{path} was written by an older version and records no bit '
            'widths or parameter shapes: recalibrate (delete the file, or '
            'drop load_params)')
    if not (isinstance(payload, dict) and set(payload) == set(PAYLOAD_KEYS)):
        found = sorted(payload) if isinstance(payload, dict) else type(
            payload).__name__
        raise ValueError(f'{path} is not a quantization parameter file '
                         f'(expected keys {list(PAYLOAD_KEYS)}, found '
                         f'{found})')
    _check_layout(payload, path)
    return payload


def _check_layout(payload: dict, path: str) -> None:
    """Types of the four entries and agreement of the recorded shapes with
    the stored tensors."""
    params, bits, shapes = (payload['state_dict'], payload['bits'],
                            payload['shapes'])
    for key, value in (('meta', payload['meta']), ('bits', bits),
                       ('shapes', shapes), ('state_dict', params)):
        if not isinstance(value, dict):
            raise ValueError(f'{path}: {key!r} must be a dict, got '
                             f'{type(value).__name__}')
    for name, b in bits.items():
        if isinstance(b, bool) or not isinstance(b, int):
            raise ValueError(f'{path}: bits of quantizer {name!r} must be '
                             f'an int, got {b!r}')
    if set(shapes) != set(params):
        odd = sorted(set(shapes) ^ set(params))
        raise ValueError(f'{path}: recorded shapes and stored parameters '
                         f'name different keys, e.g. {odd[:5]}')
    for key, value in params.items():
        if not isinstance(value, Tensor):
            raise ValueError(f'{path}: parameter {key!r} must be a Tensor, '
                             f'got {type(value).__name__}')
        if list(value.shape) != list(shapes[key]):
            raise ValueError(
                f'{path}: parameter {key!r} has shape {tuple(value.shape)} '
                f'but the file records {tuple(shapes[key])}')
        if value.numel() == 0:
            raise ValueError(f'{path}: parameter {key!r} is empty (an '
                             'uncalibrated quantizer)')


def check_bits(state: QuantState, bits: Dict[str, int],
               source: str) -> None:
    """Every quantizer of ``state`` must have the bit width ``bits`` records.

    Raises:
        ValueError: a quantizer missing from / unknown to ``bits``, or a
            different width, naming ``source``, the quantizer and both
            values.
    """
    model_bits = quant_bits(state)
    missing = sorted(set(model_bits) - set(bits))
    unexpected = sorted(set(bits) - set(model_bits))
    if missing or unexpected:
        raise ValueError(f'{source}: bit widths recorded for other '
                         f'quantizers: missing {missing[:5]}, unexpected '
                         f'{unexpected[:5]}')
    for name, b in model_bits.items():
        if bits[name] != b:
            raise ValueError(
                f'{source}: quantizer {name!r} was calibrated at '
                f'{bits[name]} bits but the quantized model uses {b} bits')


def load_quant_params(state: QuantState, params: Dict[str, Tensor],
                      source: str = 'parameters',
                      bits: Optional[Dict[str, int]] = None) -> None:
    """Load saved parameters into the quantizers of ``state`` and enable
    them.  Nothing is changed unless every key, bit width (when ``bits``
    is given) and shape matches.

    Raises:
        ValueError: missing or unexpected keys, a bit width that differs,
            an empty parameter, or a shape that does not fit a quantizer
            (per-channel / per-head counts come from the layer), naming
            ``source``, the key and both values.
    """
    expected = {f'{name}.{k}' for name, q in state.quantizers()
                for k in q.state_dict()}
    missing = sorted(expected - set(params))
    unexpected = sorted(set(params) - expected)
    if missing or unexpected:
        raise ValueError(
            f'{source} do not match the quantized model: missing '
            f'{missing[:5]}{" ..." if len(missing) > 5 else ""} '
            f'({len(missing)}), unexpected {unexpected[:5]}'
            f'{" ..." if len(unexpected) > 5 else ""} ({len(unexpected)})')
    if bits is not None:
        check_bits(state, bits, source)
    empty = sorted(k for k, v in params.items() if v.numel() == 0)
    if empty:
        raise ValueError(f'{source}: parameter {empty[0]!r} is empty (an '
                         'uncalibrated quantizer)')
    quantizers = dict(state.quantizers())
    backup = {n: {k: v.clone() for k, v in q.state_dict().items()}
              for n, q in quantizers.items()}
    try:
        for name, q in quantizers.items():
            prefix = name + '.'
            q.load_state_dict({k[len(prefix):]: v for k, v in params.items()
                               if k.startswith(prefix)})
    except (RuntimeError, ValueError) as err:
        for name, q in quantizers.items():
            q.load_state_dict(backup[name])
        detail = str(err).split(':\n\t', 1)[-1].replace('\n\t', '; ')
        raise ValueError(f'{source} do not fit the quantized model: '
                         f'{detail}') from err
    for q in quantizers.values():
        q.enabled = True


def load_quant_file(state: QuantState, path: str) -> dict:
    """Read ``path`` (:func:`read_quant_params`) and load it into ``state``
    with every check of :func:`load_quant_params`, bit widths included.

    Returns:
        dict: the file's ``meta``.

    Raises:
        FileNotFoundError, ValueError: see the two functions.
    """
    payload = read_quant_params(path)
    load_quant_params(state, payload['state_dict'], path, payload['bits'])
    return payload['meta']
