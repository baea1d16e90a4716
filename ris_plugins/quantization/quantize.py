"""Model-level quantization: from a ``quant_cfg`` to fake-quantized layers.

``quant_cfg`` uses mmrazor's vocabulary (``global_qconfig`` with
``w_qscheme`` / ``a_qscheme``; mmrazor 1.0.0
``mmrazor/models/quantizers``) with eager module swapping instead of FX::

    quant_cfg = dict(
        w_bits=4, a_bits=4,
        global_qconfig=dict(
            w_qscheme=dict(type='UniformQuantizer', granularity='channel'),
            a_qscheme=dict(type='UniformQuantizer', symmetric=False),
            m_qscheme=dict(type='UniformQuantizer', granularity='head',
                           ch_axis=1)),
        rules=[dict(pattern=r'backbone\.patch_embed\..*', a_qscheme=None),
               dict(pattern=r'decode_head\.conv_seg', skip=True)])

Layers: every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and every
attention product exposed by :mod:`.attention`.  Linear/Conv layers get
``w_qscheme`` (weights) and ``a_qscheme`` (input activation); a matmul's two
operands both get ``m_qscheme``.  ``rules`` are applied in order; each has
``pattern`` (regex, full match on the module name), optional ``types``
(subset of ``('Linear', 'Conv', 'MatMul')``) and any of ``w_qscheme``,
``a_qscheme``, ``b_qscheme`` (the matmul's second operand; ``a_qscheme``
is the first), ``w_bits``, ``a_bits`` (bits only, family kept) and
``skip=True`` (layer stays FP).  A rule that matches no layer is an error
unless it has ``optional=True`` (for shared bases that serve several
models).  A qscheme of ``None`` keeps that input FP.
A qscheme without ``bits`` takes ``w_bits`` (weights) or ``a_bits``.
``faithful`` (default :data:`~.quantizers.DEFAULT_FAITHFUL`, False, the
same default as the quantizer classes) is passed to every quantizer type
that takes it unless its qscheme sets it: True reproduces the official
PTQ4RIS arithmetic, quirks included.  Quantizer types are looked up in
:data:`~.registry.QUANTIZERS`.  ``budget`` (mixed precision from a
sensitivity measurement, validated by
:func:`~.settings.check_budget`) is resolved by
:func:`~.mixed_precision.calibrate_with_budget` into extra ``rules``;
:func:`quantize_model` refuses an unresolved one.
"""
import copy
import inspect
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch.nn as nn

from .attention import convert_attention, find_unconverted_attention
from .matmul import MatMul
from .qmodules import is_quantized, quant_class_for, restore_float, to_quant
from .quantizers import DEFAULT_FAITHFUL, check_bits
from .registry import QUANTIZERS

KINDS = ('Linear', 'Conv', 'MatMul')
RULE_KEYS = ('pattern', 'types', 'w_qscheme', 'a_qscheme', 'b_qscheme',
             'w_bits', 'a_bits', 'skip', 'optional')
FP_BY_DESIGN = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase,
                nn.Embedding)


def layer_kind(module: nn.Module) -> Optional[str]:
    """'Linear', 'Conv', 'MatMul' or None (not quantizable)."""
    if quant_class_for(module) is None:
        return None
    if isinstance(module, MatMul):
        return 'MatMul'
    return 'Linear' if isinstance(module, nn.Linear) else 'Conv'


@dataclass
class QuantState:
    """What :func:`quantize_model` did, so it can be reported and undone.

    Attributes:
        layers: ``{name: module}`` of the quantized layers, in model order.
        skipped: names kept FP by a ``skip`` rule.
        unsupported: ``(name, type)`` of modules with own parameters that
            the framework cannot quantize (and that are not norms or
            embeddings, which stay FP by design).
        unconverted_attention: attention modules with no adapter: their
            products stay FP.
        converted_attention: names of the attention modules converted to
            explicit products (see :func:`~.attention.convert_attention`).
    """
    layers: Dict[str, nn.Module] = field(default_factory=dict)
    skipped: List[str] = field(default_factory=list)
    unsupported: List[Tuple[str, str]] = field(default_factory=list)
    unconverted_attention: List[str] = field(default_factory=list)
    converted_attention: List[str] = field(default_factory=list)
    _undo: List[Callable[[], None]] = field(default_factory=list)

    def quantizers(self):
        """Yield ``(full name, quantizer)`` for every attached quantizer."""
        for name, layer in self.layers.items():
            for qname, q in layer.quantizers().items():
                yield f'{name}.{qname}', q


def _build_quantizer(scheme: Optional[dict], bits: int, where: str,
                     faithful: bool):
    if scheme is None:
        return None
    cfg = copy.deepcopy(dict(scheme))
    cfg.setdefault('bits', bits)
    qtype = cfg.get('type')
    qcls = QUANTIZERS.get(qtype) if isinstance(qtype, str) else None
    if qcls is not None and 'faithful' in inspect.signature(
            qcls.__init__).parameters:
        cfg.setdefault('faithful', faithful)
    try:
        quantizer = QUANTIZERS.build(cfg)
    except KeyError as err:  # unknown type, with the valid ones
        raise ValueError(f'{where}: {err.args[0]}') from err
    except (ValueError, TypeError) as err:
        raise ValueError(f'{where}: {err}') from err
    quantizer.name = where
    return quantizer


def check_rules(rules) -> List[re.Pattern]:
    """Validate the syntax of ``quant_cfg.rules`` (no model needed).

    Returns:
        list: the compiled ``pattern`` of each rule.

    Raises:
        ValueError: rules not a list of dicts, an unknown rule key or
            ``types`` entry, or a ``pattern`` that is not a string or not a
            valid regular expression (naming ``rules[i].pattern``, the
            pattern and the regex error).
    """
    if not isinstance(rules, (list, tuple)):
        raise ValueError('quant_cfg.rules must be a list of dicts, got '
                         f'{type(rules).__name__}')
    compiled = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise ValueError(f'quant_cfg.rules[{i}] must be a dict, got '
                             f'{type(rule).__name__}')
        unknown = set(rule) - set(RULE_KEYS)
        if unknown:
            raise ValueError(f'quant_cfg.rules[{i}]: unknown keys '
                             f'{sorted(unknown)}; valid keys: {RULE_KEYS}')
        bad_types = set(rule.get('types', ())) - set(KINDS)
        if bad_types:
            raise ValueError(f'quant_cfg.rules[{i}].types: unknown '
                             f'{sorted(bad_types)}; valid: {KINDS}')
        pattern = rule.get('pattern', '.*')
        if not isinstance(pattern, str):
            raise ValueError(f'quant_cfg.rules[{i}].pattern must be a '
                             f'regular expression string, got {pattern!r}')
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise ValueError(f'quant_cfg.rules[{i}].pattern {pattern!r} is '
                             f'not a valid regular expression: {err}'
                             ) from err
    return compiled


def _check_rules(rules: List[dict], names: Dict[str, str]) -> None:
    for i, (rule, pattern) in enumerate(zip(rules, check_rules(rules))):
        if not rule.get('optional') and not any(
                _rule_applies(rule, pattern, n, k) for n, k in names.items()):
            some = list(names)[:8]
            raise ValueError(
                f'quant_cfg.rules[{i}]: pattern {pattern.pattern!r} '
                f'(types {rule.get("types", KINDS)}) matches no quantizable '
                f'layer; layer names look like {some}')


def _rule_applies(rule: dict, pattern, name: str, kind: str) -> bool:
    return (kind in rule.get('types', KINDS)
            and pattern.fullmatch(name) is not None)


def resolve_layer(name: str, kind: str, quant_cfg: dict) -> Optional[dict]:
    """The effective ``{quantizer child: (qscheme, bits)}`` for one layer,
    or None when a rule skips it."""
    glob = quant_cfg.get('global_qconfig', {})
    w_bits, a_bits = quant_cfg['w_bits'], quant_cfg['a_bits']
    if kind == 'MatMul':
        plan = dict(a_quantizer=[glob.get('m_qscheme'), a_bits],
                    b_quantizer=[glob.get('m_qscheme'), a_bits])
    else:
        plan = dict(w_quantizer=[glob.get('w_qscheme'), w_bits],
                    a_quantizer=[glob.get('a_qscheme'), a_bits])
    for rule in quant_cfg.get('rules', []):
        if not _rule_applies(rule, re.compile(rule.get('pattern', '.*')),
                             name, kind):
            continue
        if rule.get('skip'):
            return None
        for key, child in (('w_qscheme', 'w_quantizer'),
                           ('a_qscheme', 'a_quantizer'),
                           ('b_qscheme', 'b_quantizer')):
            if key in rule and child in plan:
                plan[child][0] = rule[key]
        for key, children in (('w_bits', ('w_quantizer', )),
                              ('a_bits', ('a_quantizer', 'b_quantizer'))):
            if key in rule:
                for child in children:
                    if child in plan:
                        plan[child][1] = rule[key]
    return plan


CFG_KEYS = ('w_bits', 'a_bits', 'global_qconfig', 'rules', 'faithful',
            'budget')


def validate_quant_cfg(quant_cfg: dict, require_bits: bool = True) -> None:
    """Check a ``quant_cfg`` before any model is touched: known keys, bits
    and the rules' syntax (see :func:`check_rules`).

    Args:
        require_bits: False to accept a config whose ``w_bits`` / ``a_bits``
            are set later (e.g. a method base's ``ptq.quant_cfg`` before
            the quantized config merges its bit widths in).

    Raises:
        ValueError: naming the key and the valid keys or range.
    """
    unknown = set(quant_cfg) - set(CFG_KEYS)
    if unknown:
        raise ValueError(f'quant_cfg: unknown keys {sorted(unknown)}; valid '
                         f'keys: {CFG_KEYS}')
    for key in ('w_bits', 'a_bits'):
        if key not in quant_cfg and not require_bits:
            continue
        check_bits(quant_cfg.get(key), f'quant_cfg.{key}')
    check_rules(quant_cfg.get('rules', []))


def quantize_model(model: nn.Module, quant_cfg: dict) -> QuantState:
    """Convert attention, then swap every selected layer for its
    fake-quantized version (quantizers start disabled and uncalibrated).

    All quantizers are built and validated before the first swap, and any
    error restores the model, so a failure leaves the FP model untouched.

    Per-group quantizers get their expected group count from the layer
    (see :func:`group_count`), so parameters of the wrong shape are
    refused when loaded.

    Raises:
        ValueError: bits outside [2, 16], an unknown quantizer type or
            option, an unknown rule key, an invalid rule regex, a rule
            pattern that matches no layer, or a ``num_channels`` that
            contradicts the layer, or a ``budget`` (it needs a sensitivity
            measurement: :func:`~.mixed_precision.calibrate_with_budget`).
    """
    validate_quant_cfg(quant_cfg)
    if quant_cfg.get('budget') is not None:
        raise ValueError(
            f'quant_cfg.budget={quant_cfg["budget"]!r} is resolved from a '
            'sensitivity measurement: calibrate with ris_plugins.'
            'quantization.calibrate_with_budget (PTQHook does), or quantize '
            'with assigned_quant_cfg(quant_cfg, high_layers) / the file\'s '
            'resolved_quant_cfg(meta)')
    state = QuantState()
    try:
        state.converted_attention = convert_attention(model, state._undo)
        _plan_and_swap(model, quant_cfg, state)
    except Exception:
        restore_model(model, state)
        raise
    return state


def restore_model(model: nn.Module, state: QuantState) -> None:
    """Undo :func:`quantize_model`: FP classes, no quantizers, original
    attention modules (each conversion's own undo, in reverse order, see
    :func:`~.attention.convert_attention`).  Parameters were never copied,
    so the FP weights are exactly the ones before quantization."""
    for layer in state.layers.values():
        restore_float(layer)
    state.layers.clear()
    while state._undo:
        state._undo.pop()()
    state.converted_attention = []


def group_count(model: nn.Module, name: str, kind: str, child: str,
                quantizer: nn.Module) -> Optional[int]:
    """The number of parameter groups a per-channel / per-head quantizer
    of layer ``name`` must have, or None when the layer does not fix it.

    Weights: ``weight.shape[ch_axis]``; Linear inputs with ``ch_axis=-1``:
    ``in_features``; Conv inputs with ``ch_axis=1``: ``in_channels``;
    attention products with ``ch_axis=1`` (B, H, N, M): the parent
    attention module's ``num_heads`` / ``num_attention_heads``.
    """
    axis = getattr(quantizer, 'ch_axis', None)
    if axis is None:
        return None
    layer = model.get_submodule(name)
    if kind != 'MatMul':
        if child == 'w_quantizer':
            w = layer.weight
            return int(w.shape[axis]) if -w.dim() <= axis < w.dim() else None
        if kind == 'Linear' and axis == -1:
            return int(layer.in_features)
        if kind == 'Conv' and axis == 1:
            return int(layer.in_channels)
        return None
    if axis != 1:
        return None
    parent = model.get_submodule(name.rpartition('.')[0])
    for attr in ('num_heads', 'num_attention_heads'):
        heads = getattr(parent, attr, None)
        if isinstance(heads, int) and not isinstance(heads, bool):
            return heads
    return None


def _bind_group_counts(model: nn.Module, name: str, kind: str,
                       quantizers: dict) -> None:
    """Set ``num_channels`` of per-group quantizers from the layer."""
    for child, q in quantizers.items():
        if q is None or not hasattr(q, 'num_channels'):
            continue
        count = group_count(model, name, kind, child, q)
        if count is None:
            continue
        if q.num_channels is not None and q.num_channels != count:
            raise ValueError(
                f'{name}.{child}: num_channels={q.num_channels} but the '
                f'layer has {count} groups along ch_axis={q.ch_axis}')
        q.num_channels = count


def _plan_and_swap(model: nn.Module, quant_cfg: dict,
                   state: QuantState) -> None:
    names = {n: layer_kind(m) for n, m in model.named_modules()
             if layer_kind(m) is not None and not is_quantized(m)}
    _check_rules(quant_cfg.get('rules', []), names)
    built = {}
    for name, kind in names.items():
        plan = resolve_layer(name, kind, quant_cfg)
        if plan is None:
            state.skipped.append(name)
            continue
        built[name] = {
            child: _build_quantizer(scheme, bits, f'{name}.{child}',
                                    quant_cfg.get('faithful',
                                                  DEFAULT_FAITHFUL))
            for child, (scheme, bits) in plan.items()}
    for name, quantizers in built.items():
        _bind_group_counts(model, name, names[name], quantizers)
    for name, quantizers in built.items():
        layer = model.get_submodule(name)
        to_quant(layer, quantizers)
        state.layers[name] = layer
    state.unconverted_attention = find_unconverted_attention(model)
    state.unsupported = [
        (n, type(m).__name__) for n, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
        and layer_kind(m) is None and not is_quantized(m)
        and not isinstance(m, FP_BY_DESIGN)]
