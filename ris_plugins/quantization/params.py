"""Saving and reloading calibrated quantization parameters.

The file is a plain ``torch.save`` of ``{'meta': dict, 'state_dict':
{key: Tensor}}`` holding only tensors, strings, numbers, lists and dicts,
so it loads with ``torch.load(weights_only=True)``.
"""
import os
import os.path as osp
import tempfile
from typing import Dict, Optional

import torch
from torch import Tensor

from .quantize import QuantState


def quant_state_dict(state: QuantState) -> Dict[str, Tensor]:
    """``{'<layer>.<quantizer child>.<buffer>': Tensor}`` of every
    quantizer (scales, zero points, splits, RORQ bands)."""
    out = {}
    for name, q in state.quantizers():
        for key, value in q.state_dict().items():
            out[f'{name}.{key}'] = value.detach().clone()
    return out


def save_quant_params(path: str, state: QuantState,
                      meta: Optional[dict] = None) -> None:
    """Write the parameters atomically (temporary file + rename), so an
    interrupted save never leaves a half-written file."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    payload = dict(meta=meta or {}, state_dict=quant_state_dict(state))
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
    """Load a parameter file with ``weights_only=True``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: it is not a quantization parameter file.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'quantization parameter file not found: '
                                f'{path}')
    payload = torch.load(path, map_location='cpu', weights_only=True)
    if not (isinstance(payload, dict) and set(payload) == {'meta',
                                                         'state_dict'}):
        raise ValueError(f'{path} is not a quantization parameter file '
                         "(expected keys 'meta' and 'state_dict')")
    return payload


def load_quant_params(state: QuantState, params: Dict[str, Tensor],
                      source: str = 'parameters') -> None:
    """Load saved parameters into the quantizers of ``state`` and enable
    them.  Nothing is changed unless every key matches.

    Raises:
        ValueError: missing or unexpected keys, or a shape that does not
            fit a quantizer, naming the keys and ``source``.
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
        raise ValueError(f'{source} do not fit the quantized model: {err}'
                         ) from err
    for q in quantizers.values():
        q.enabled = True
