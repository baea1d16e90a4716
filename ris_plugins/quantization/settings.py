"""The PTQ settings of a config: one top-level, mergeable dict ``ptq``.

::

    custom_hooks = [dict(type='PTQHook')]
    ptq = dict(
        quant_cfg=dict(w_bits=4, a_bits=4, global_qconfig=..., rules=...,
                       faithful=False,
                       budget=None),       # or dict(size_ratio=1.3) /
                                           # dict(avg_w_bits=5.0): mixed
                                           # precision, see mixed_precision
        search=dict(rounds=1, rows=256),   # None: observers only
                                           # (+ chunk_elems, memory)
        calibrate_steps=32, seed=0, max_rows=256,
        max_cache_mb=2048,                 # cache bound (MiB) or None
        calibrate_dataloader=None,         # dict(dataset=...) or None
        params_file='ptq_params.pth', load_params=None)

Why a top-level dict (read by ``PTQHook``) and not hook arguments or an
mmrazor-style ``test_cfg=dict(type='PTQLoop', ...)``: mmengine merges
dicts key by key but replaces lists, and refuses a key defined by two
sibling bases.  Settings inside ``custom_hooks`` (a list) had to be
restated whole by every method base and every override, and the bit
widths lived in a second top-level key that the hook had to find;
``test_cfg`` is already defined by every model config's schedule, so a
method base listed next to it cannot set it.  ``ptq`` is defined by the
method base only (``configs/_base_/quantization/*.py``), the quantized
config merges its bit widths into it, and ``--cfg-options
ptq.quant_cfg.w_bits=8`` works.
"""
import copy
import re
from typing import Dict, Optional

from .quantize import validate_quant_cfg

DEFAULTS = dict(quant_cfg=None, search=None, calibrate_dataloader=None,
                calibrate_steps=32, seed=0, max_rows=256, max_cache_mb=2048,
                params_file='ptq_params.pth', load_params=None)
SEARCH_KEYS = ('rounds', 'rows', 'chunk_elems')
#: ``quant_cfg.budget``: exactly one target, optional ``high_bits``.
BUDGET_TARGETS = ('avg_w_bits', 'size_ratio')
BUDGET_KEYS = BUDGET_TARGETS + ('high_bits', )
DEFAULT_HIGH_BITS = 8


def _positive_int(value, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{where} must be a positive int, got {value!r}')
    return value


def check_ptq_cfg(ptq: Optional[dict], where: str = 'ptq') -> dict:
    """Validate a ``ptq`` dict and fill in the defaults (no model needed).

    Args:
        ptq: the config's ``ptq`` (a dict or mmengine ``ConfigDict``).
        where: how errors name it.

    Returns:
        dict: a plain-dict deep copy with every key of :data:`DEFAULTS`.

    Raises:
        ValueError: ``ptq`` missing or not a dict, an unknown key (naming
            the valid ones), no ``quant_cfg``, a bad ``quant_cfg`` (unknown
            key, bits not an int in [2, 16] or missing, invalid rule
            regex), ``calibrate_steps`` / ``max_rows`` / search ``rounds``
            / ``rows`` not positive ints, ``max_cache_mb`` not a positive
            number or None, an unknown search key, or a bad
            ``quant_cfg.budget`` (see :func:`check_budget`).
    """
    if ptq is None:
        raise ValueError(f'{where}: no PTQ settings; inherit one of '
                         'configs/_base_/quantization/*.py (they define the '
                         'top-level dict `ptq`)')
    if not isinstance(ptq, dict):
        raise ValueError(f'{where} must be a dict, got {type(ptq).__name__}')
    ptq = _plain(ptq)
    unknown = sorted(set(ptq) - set(DEFAULTS))
    if unknown:
        raise ValueError(f'{where}: unknown keys {unknown}; valid keys: '
                         f'{sorted(DEFAULTS)}')
    out = dict(copy.deepcopy(DEFAULTS), **ptq)
    if not isinstance(out['quant_cfg'], dict):
        raise ValueError(f'{where}.quant_cfg must be a dict with w_bits, '
                         'a_bits, global_qconfig and rules, got '
                         f"{out['quant_cfg']!r}")
    for key in ('w_bits', 'a_bits'):
        if key not in out['quant_cfg']:
            raise ValueError(
                f'{where}.quant_cfg.{key} is not set; set the bit widths in '
                f'the quantized config, e.g. ptq = dict(quant_cfg=dict('
                'w_bits=4, a_bits=4))')
    validate_quant_cfg(out['quant_cfg'])
    check_budget(out['quant_cfg'].get('budget'), out['quant_cfg']['w_bits'],
                 f'{where}.quant_cfg.budget')
    for key in ('calibrate_steps', 'max_rows'):
        _positive_int(out[key], f'{where}.{key}')
    cache = out['max_cache_mb']
    if cache is not None and (isinstance(cache, bool) or not isinstance(
            cache, (int, float)) or not cache > 0):
        raise ValueError(f'{where}.max_cache_mb must be a positive number '
                         f'(MiB) or None, got {cache!r}')
    search = out['search']
    if search is not None:
        if not isinstance(search, dict):
            raise ValueError(f'{where}.search must be None or a dict with '
                             f'keys {SEARCH_KEYS}, got {search!r}')
        bad = sorted(set(search) - set(SEARCH_KEYS))
        if bad:
            raise ValueError(f'{where}.search: unknown keys {bad}; valid '
                             f'keys: {SEARCH_KEYS}')
        for key, value in search.items():
            _positive_int(value, f'{where}.search.{key}')
    return out


def check_budget(budget: Optional[dict], w_bits: int,
                 where: str = 'quant_cfg.budget') -> Optional[dict]:
    """Validate a mixed-precision ``budget`` (no model needed).

    The budget bounds the size of the quantized layers' weights, ``S =
    sum_l numel(W_l) * bits_l / 8`` bytes, with every layer at ``w_bits``
    (the low setting) or ``high_bits`` (default 8; weights and inputs):

    - ``dict(size_ratio=r)``: ``S <= r * S_low``, with ``S_low`` the size
      at ``w_bits`` everywhere; r in [1, high_bits / w_bits].
    - ``dict(avg_w_bits=b)``: ``S <= b * (number of quantized weights) /
      8``, the average bits per quantized weight; b in [w_bits,
      high_bits].

    Args:
        budget: None (no mixed precision) or the dict above.
        w_bits: the config's ``quant_cfg.w_bits`` (the low setting).
        where: how errors name the budget.

    Returns:
        dict or None: ``budget`` with ``high_bits`` filled in.

    Raises:
        ValueError: not a dict, unknown keys or not exactly one target
            (naming the valid keys), a target that is not a number or
            outside its range, or ``high_bits`` not an int in
            (w_bits, 16].
    """
    if budget is None:
        return None
    if not isinstance(budget, dict):
        raise ValueError(f'{where} must be None or a dict with one of '
                         f'{BUDGET_TARGETS} (and optionally high_bits), got '
                         f'{budget!r}')
    unknown = sorted(set(budget) - set(BUDGET_KEYS))
    if unknown:
        raise ValueError(f'{where}: unknown keys {unknown}; valid keys: '
                         f'{BUDGET_KEYS}')
    targets = [k for k in BUDGET_TARGETS if k in budget]
    if len(targets) != 1:
        raise ValueError(f'{where} must set exactly one of {BUDGET_TARGETS}, '
                         f'got {targets or "none"}')
    high = budget.get('high_bits', DEFAULT_HIGH_BITS)
    if isinstance(high, bool) or not isinstance(high, int) or not (
            w_bits < high <= 16):
        raise ValueError(f'{where}.high_bits must be an int in '
                         f'({w_bits}, 16] (above quant_cfg.w_bits), got '
                         f'{high!r}')
    key, value = targets[0], budget[targets[0]]
    lo, hi = ((1.0, high / w_bits) if key == 'size_ratio' else
              (float(w_bits), float(high)))
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not lo <= value <= hi:
        raise ValueError(f'{where}.{key} must be a number in [{lo:g}, '
                         f'{hi:g}] (w_bits={w_bits}, high_bits={high}), got '
                         f'{value!r}')
    return dict(budget, high_bits=high)


def parse_bits(name: str) -> Dict[str, int]:
    """``'w4a8'`` -> ``dict(w_bits=4, a_bits=8)`` (case-insensitive).

    Raises:
        ValueError: not of the form ``w<int>a<int>`` with ints in [2, 16].
    """
    match = re.fullmatch(r'w(\d+)a(\d+)', str(name).lower())
    if match is None:
        raise ValueError(f'bit setting {name!r} is not of the form '
                         "'w<bits>a<bits>' (e.g. 'w8a8', 'w4a4')")
    bits = dict(w_bits=int(match[1]), a_bits=int(match[2]))
    validate_quant_cfg(bits)
    return bits


def _plain(obj):
    """mmengine ConfigDicts / tuples -> plain dicts / lists, recursively."""
    if hasattr(obj, 'to_dict'):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    return obj
