"""Lower calibrated fake quantizers to ONNX QuantizeLinear/DequantizeLinear.

Inside :func:`qdq_export_mode`, every layer that :func:`quantize_model`
quantized exports its quantizers as standard QDQ pairs with the calibrated
scales and zero points, so ONNX Runtime's QDQ fusion runs the layer as an
integer kernel (QLinearConv, QLinearMatMul, QGemm). Nothing else gets QDQ:
layers our calibration keeps FP, the attention-mask path (BERT's additive
mask holds float32's minimum; quantizing it gives infinite scales and mIoU
0) and every norm / softmax / residual stay float.

Lowering per quantizer (``torch.fake_quantize_*`` is what the TorchScript
exporter turns into QuantizeLinear -> DequantizeLinear):

=====================================  =====================================
quantizer                              ONNX
=====================================  =====================================
``UniformQuantizer`` weights           int8 QDQ per output channel (axis of
(symmetric, per channel, b <= 8)       W^T for Linear, 0 for Conv); codes of
                                       b < 8 bits lie in [-2^(b-1), 2^(b-1))
                                       and are stored as INT4 for b <= 4
                                       (:func:`fold_weight_quantizers`)
``UniformQuantizer`` activations       per tensor: uint8 (asymmetric, zero
(b <= 8)                               point z) or int8 (symmetric) QDQ;
                                       per channel / head: the same with
                                       ``axis`` (per tensor when there is
                                       one head); b < 8: a float Clip to the
                                       b-bit grid's range first, so the
                                       8-bit container holds exactly the
                                       b-bit grid of the simulation
DRQ-softmax (twin uniform)             ``drq='exact'``: two QDQ (fine and
                                       coarse grid, clamped by their 8-bit
                                       containers) and a Where (or the
                                       faithful sum of clamps); ``'int8'``:
                                       one uint8 QDQ on [0, 1] (step 1/255)
DRQ-GELU (twin uniform)                ``'exact'``: uint8 QDQ of the
                                       positive part + int8 QDQ of the
                                       negative part, summed; ``'int8'``: one
                                       uint8 QDQ on [-0.17, (q-1)·Δ+]
attention operands per head            ``heads='exact'``: per-axis QDQ
                                       (the product runs in float);
                                       ``'int8'``: one uint8 QDQ over the
                                       union of the heads' grid ranges
                                       (the product runs as an integer
                                       kernel)
RORQ (banded)                          ``rorq='exact'``: the banded
                                       arithmetic traced as float ops
                                       (band id from the thresholds, Gather
                                       of the band's step and zero point,
                                       Round/Clip); ``'int8'``: one uint8
                                       QDQ on the union of the bands' ranges
=====================================  =====================================

The word-embedding tables, which the simulation keeps FP, are stored as
integers in the export (``export_qdq(embedding=...)``: int8 per row, or
4-bit blocks for 4-bit weight settings; :mod:`.embedding`).

The exact lowerings reproduce the simulation (see ``tests/test_deploy``);
their Linear inputs are not a single QDQ pair, so those Linears run in
float. With ``'int8'`` they become ordinary 8-bit QDQ and the Linear can
run as an integer kernel, at the accuracy measured in
``projects/ptq4ris/README.md``.

ONNX Runtime's CPU provider runs ``DQ -> MatMul`` (a Linear on (..., N,
C) tokens) with a float output as ``MatMulIntegerToFloat``, so those
outputs stay float as in the simulation. It fuses ``DQ -> Conv`` into
``QLinearConv``, and a Linear on (B, C) vectors (which it first turns into
a Gemm) into ``QGemm``, only when the output is quantized too (``-> Q``).
A 1x1 Conv1d on (B, C, N) tokens (LAVT's PWAM) is exported as the token
Linear it is (``DQ -> MatMul``), so it gets ``MatMulIntegerToFloat`` and no
output requantization.
:func:`collect_output_ranges` therefore measures each quantized Linear /
Conv output on calibration inputs and the export adds a uint8 output QDQ
(min-max range) to those Convs and 2-D Linears whose input is a per-tensor
8-bit-container QDQ. That requantization is the only arithmetic the
deployed model adds to the simulation (``output_qdq=False`` leaves it out;
those layers then run in float). On token Linears the output QDQ only
costs time: ONNX Runtime still picks ``MatMulIntegerToFloat`` and then runs
the bias Add, QuantizeLinear and DequantizeLinear separately.
"""
import contextlib
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..quantization import functional as QF
from ..quantization.quantize import QuantState
from ..quantization.quantizers import (RORQQuantizer,
                                       TwinUniformGELUQuantizer,
                                       TwinUniformSoftmaxQuantizer,
                                       UniformQuantizer)
from .bn_fold import conv_bn_pairs, fold_into
from .embedding import check_embedding_mode, embedding_export_mode
from .onnx_graph import fold_weight_quantizers

LOWERINGS = ('exact', 'int8')
Range = Tuple[float, float]


# ------------------------------------------------------------ primitives
def _fq(x: Tensor, scale: Tensor, zero_point: Tensor, code_lo: Tensor,
        code_hi: Tensor, axis: Optional[int], signed: bool) -> Tensor:
    """QDQ of x in an 8-bit container (int8 if ``signed`` else uint8) on
    the grid ``scale * (code - zero_point)``, codes in [code_lo, code_hi].

    ``scale``, ``zero_point`` and the code bounds are () per tensor or
    (C,) along ``axis``. When the code range is narrower than the
    container, x is first clipped to the grid's range in float, so the
    container holds exactly the narrower grid.
    """
    cmin, cmax = (-128, 127) if signed else (0, 255)
    zp = zero_point.round().to(torch.int32)
    scale = scale.float()
    narrow = bool((code_lo > cmin).any() or (code_hi < cmax).any())
    if narrow:
        lo = (code_lo - zero_point) * scale
        hi = (code_hi - zero_point) * scale
        if axis is not None:
            lo = QF.expand_param(lo, x, axis)
            hi = QF.expand_param(hi, x, axis)
        x = torch.maximum(torch.minimum(x, hi), lo)
    if axis is None:
        return torch.fake_quantize_per_tensor_affine(x, scale, zp, cmin, cmax)
    return torch.fake_quantize_per_channel_affine(x, scale, zp,
                                                  axis % x.dim(), cmin, cmax)


def _const(v, like: Tensor) -> Tensor:
    return torch.as_tensor(v, dtype=torch.float32, device=like.device)


def _fits(zero_point: Tensor, lo: int, hi: int) -> bool:
    return bool(((zero_point >= lo) & (zero_point <= hi)).all())


def _per_tensor(q: UniformQuantizer) -> bool:
    """Per tensor, or per channel / head with a single group (one scale
    for the whole tensor: a 1-head attention operand)."""
    return q.ch_axis is None or q.scale.numel() == 1


def _uniform_act(q: UniformQuantizer, x: Tensor) -> Tensor:
    qmax = 2**(q.bits - 1)
    scale = q.scale.reshape(()) if _per_tensor(q) else q.scale
    if q.symmetric:
        zp = torch.zeros_like(scale)
        lo, hi, signed = _const(-qmax, x), _const(qmax - 1, x), True
    else:
        zp = q.zero_point.reshape(scale.shape)
        lo, hi, signed = _const(0, x), _const(2**q.bits - 1, x), False
        if not _fits(zp, 0, 255):  # faithful percentile: z may be < 0
            return q.quantize(x)
    axis = None if _per_tensor(q) else q.ch_axis
    if axis is not None:
        lo, hi = lo.expand_as(scale), hi.expand_as(scale)
    return _fq(x, scale, zp, lo, hi, axis, signed)


def _asym8(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """Plain 8-bit asymmetric per-tensor QDQ of x over [lo, hi]."""
    scale, zp = QF.asym_qparams(lo, hi, 8)
    return _fq(x, scale, zp, _const(0, x), _const(255, x), None, False)


def _drq_softmax(q: TwinUniformSoftmaxQuantizer, x: Tensor,
                 mode: str) -> Tensor:
    """DRQ-softmax: 'int8' one uint8 grid on [0, 1]; 'exact' the fine grid
    (step s/q1) below the split s and the coarse grid (step 1/q1) above,
    q1 = 2^(b-1) - 1, each a QDQ whose 8-bit container does the clamping
    (no float Min / Max: codes of the fine grid below s are < q1 + 1/2, and
    an int8 container saturates the coarse grid at 127 = q1 for 8 bits;
    below 8 bits one float Min(x, 1) comes first)."""
    if mode == 'int8':
        return _asym8(x, _const(0, x), _const(1, x))
    q1 = 2**(q.bits - 1) - 1
    s = q.split.float()
    if q.faithful:  # upstream sum of two clamped quantizers
        return _qdq8(torch.clamp(torch.maximum(x, s), max=1.0), 1.0 / q1,
                     signed=True) + _qdq8(
                         torch.minimum(torch.clamp(x, min=0.0), s), s / q1)
    high = x if q1 == 127 else torch.clamp(x, max=1.0)
    return torch.where(x < s, _qdq8(x, s / q1),
                       _qdq8(high, 1.0 / q1, signed=True))


def _qdq8(x: Tensor, scale, signed: bool = False) -> Tensor:
    """One QDQ with zero point 0 in an int8 (``signed``) or uint8
    container."""
    lo, hi = (-128, 127) if signed else (0, 255)
    return torch.fake_quantize_per_tensor_affine(
        x, torch.as_tensor(scale, dtype=torch.float32), torch.zeros(
            (), dtype=torch.int32), lo, hi)


def _drq_gelu(q: TwinUniformGELUQuantizer, x: Tensor, mode: str) -> Tensor:
    qn = 2**(q.bits - 1)
    if mode == 'int8':
        return _asym8(x, _const(-qn * q.neg_scale, x),
                      (qn - 1) * q.pos_scale.float())
    zero = _const(0, x)
    pos = _fq(x, q.pos_scale.float(), zero, zero, _const(qn - 1, x), None,
              False)
    neg = _fq(x, _const(q.neg_scale, x), zero, _const(-qn, x), zero, None,
              True)
    return pos + neg


def _rorq(q: RORQQuantizer, x: Tensor, mode: str) -> Tensor:
    if mode == 'exact':
        return q.quantize(x)
    levels = 2**q.bits - 1
    lo = ((0 - q.zero_points) * q.scales).min()
    hi = ((levels - q.zero_points) * q.scales).max()
    return _asym8(x, lo, hi)


def lower_activation(q, x: Tensor, drq: str = 'exact',
                     rorq: str = 'exact', heads: str = 'exact') -> Tensor:
    """x through quantizer ``q`` as ONNX-exportable QDQ ops (see the module
    docstring); ``q=None`` (FP input) returns x.

    Raises:
        ValueError: more than 8 bits, or a quantizer type without a
            lowering, naming the quantizer.
    """
    if q is None or not q.enabled:
        return x
    if q.bits > 8:
        raise ValueError(f'quantizer {q.name or type(q).__name__!r}: '
                         f'{q.bits}-bit '
                         'quantizers have no 8-bit ONNX lowering (<= 8 bits '
                         'only)')
    if isinstance(q, UniformQuantizer):
        if heads == 'int8' and not _per_tensor(q):
            return _heads_union(q, x)
        return _uniform_act(q, x)
    if isinstance(q, TwinUniformSoftmaxQuantizer):
        return _drq_softmax(q, x, drq)
    if isinstance(q, TwinUniformGELUQuantizer):
        return _drq_gelu(q, x, drq)
    if isinstance(q, RORQQuantizer):
        return _rorq(q, x, rorq)
    raise ValueError(f'{q.name}: no ONNX lowering for {type(q).__name__}')


def is_plain_qdq(q, drq: str = 'exact', rorq: str = 'exact',
                 heads: str = 'exact') -> bool:
    """Whether ``q`` lowers to one per-tensor QDQ pair in an 8-bit
    container (what ONNX Runtime fuses into integer kernels)."""
    if q is None or not q.enabled:
        return False
    if isinstance(q, UniformQuantizer):
        if not _per_tensor(q):
            return heads == 'int8'
        return q.symmetric or _fits(q.zero_point, 0, 255)
    if isinstance(q, (TwinUniformSoftmaxQuantizer,
                      TwinUniformGELUQuantizer)):
        return drq == 'int8'
    return isinstance(q, RORQQuantizer) and rorq == 'int8'


def _grid_weight(q: UniformQuantizer,
                 weight: Tensor) -> Tuple[Tensor, Tensor]:
    """(the simulation's fake-quantized weight, per-output-channel scale
    (C_out,)), computed outside any trace so the exporter stores them as
    constants."""
    if not (isinstance(q, UniformQuantizer) and q.symmetric and q.bits <= 8
            and q.ch_axis in (None, 0)):
        raise ValueError(f'{q.name}: weights lower to int8 QDQ only from a '
                         'symmetric UniformQuantizer per tensor or per '
                         f'output channel with <= 8 bits, got {q!r}')
    with torch.no_grad():
        w = q.quantize(weight).detach().clone()  # on the b-bit grid
    scale = q.scale.detach().float().clone()
    if scale.dim() == 0:
        scale = scale.expand(w.shape[0]).contiguous()
    return w, scale


def _weight_qdq(layer, transpose: bool) -> Tensor:
    """The layer's grid weight as an int8 QDQ per output channel (codes of
    b < 8 bits stay in [-2^(b-1), 2^(b-1)); :func:`fold_weight_quantizers`
    turns the Q of the constant into stored integers)."""
    if '_export_weight' not in layer._buffers:  # weights kept FP
        return layer.weight.t() if transpose else layer.weight
    w, scale = layer._export_weight, layer._export_weight_scale
    axis = 1 if transpose else 0  # Linear: stored as W^T (C_in, C_out)
    zp = torch.zeros(scale.shape, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zp, axis, -128,
                                                  127)


# --------------------------------------------------------------- layers
def _out(y: Tensor, rng: Optional[Range]) -> Tensor:
    if rng is None:
        return y
    return _asym8(y, _const(rng[0], y), _const(rng[1], y))


def _linear_forward(layer, x: Tensor, rng, drq, rorq) -> Tensor:
    x = lower_activation(layer.a_quantizer, x, drq, rorq)
    w_t = _weight_qdq(layer, transpose=True)
    y = torch.matmul(x, w_t)
    if layer.bias is not None:
        y = y + layer.bias
    return _out(y, rng) if x.dim() == 2 else y  # QGemm wants a Q output


def _conv_forward(layer, x: Tensor, rng, drq, rorq,
                  token: bool = False) -> Tensor:
    if token:  # a 1x1 Conv1d as a Linear: (B, C_in, N) -> (B, C_out, N)
        x = lower_activation(layer.a_quantizer, x.transpose(1, 2), drq,
                             rorq)
        y = torch.matmul(x, _weight_qdq(layer, transpose=True))
        bias = layer._buffers.get('_export_bias', layer.bias)
        return (y if bias is None else y + bias).transpose(1, 2)
    x = lower_activation(layer.a_quantizer, x, drq, rorq)
    w = _weight_qdq(layer, transpose=False)
    bias = layer._buffers.get('_export_bias', layer.bias)  # BN folded in
    return _out(layer._conv_forward(x, w, bias), rng)


def _token_conv(layer, drq: str = 'exact', rorq: str = 'exact') -> bool:
    """A quantized 1x1 Conv1d (stride 1, no padding, one group) with a
    per-tensor input: a Linear on the (B, C, N) tokens, exported as one
    (``DQ -> MatMul``, W^T per output column) so ONNX Runtime runs it as
    ``MatMulIntegerToFloat`` with a float output, like a token Linear. As
    a Conv it would need an output requantization for ``QLinearConv`` and
    ONNX Runtime's channels-last integer convolution would move the
    following float ops (PWAM's InstanceNorm) to a slower layout."""
    return (isinstance(layer, nn.Conv1d) and layer.kernel_size == (1, )
            and layer.stride == (1, ) and layer.padding in ((0, ), 'valid')
            and layer.dilation == (1, ) and layer.groups == 1
            and layer.w_quantizer is not None and layer.w_quantizer.enabled
            and is_plain_qdq(layer.a_quantizer, drq, rorq))


def _matmul_forward(layer, a: Tensor, b: Tensor, drq, rorq,
                    heads) -> Tensor:
    qa, qb = layer.a_quantizer, layer.b_quantizer
    if not (is_plain_qdq(qa, drq, rorq, heads)
            and is_plain_qdq(qb, drq, rorq, heads)):
        # The product runs in float (an operand per head, or lowered
        # exactly), so an 8-bit DRQ / RORQ operand would only round
        # differently, and ONNX Runtime would fuse it with a per-head
        # (N-D, per-axis) other operand into MatMulIntegerToFloat, which
        # rejects that zero point at run time (CRIS's VL decoder).
        a_fused = _per_head(qa, a) and _per_head(qb, b)
        a = (_unfusable(qa, a) if a_fused else
             lower_activation(qa, a, 'exact', 'exact'))
        return a @ lower_activation(qb, b, 'exact', 'exact')
    a = lower_activation(qa, a, drq, rorq, heads)
    b = lower_activation(qb, b, drq, rorq, heads)
    return a @ b


def _heads_union(q: UniformQuantizer, x: Tensor) -> Tensor:
    """A per-head (per-channel) quantizer lowered ``heads='int8'``: one
    uint8 per-tensor QDQ over the union of the heads' grid ranges, so the
    product can run as an integer kernel."""
    if q.symmetric:
        qmax = 2**(q.bits - 1)
        lo, hi = -qmax * q.scale, (qmax - 1) * q.scale
    else:
        lo = -q.zero_point * q.scale
        hi = (2**q.bits - 1 - q.zero_point) * q.scale
    return _asym8(x, lo.min().detach().float(), hi.max().detach().float())


def _per_head(q, x: Tensor) -> bool:
    """A per-head / per-channel UniformQuantizer of x along a batch-like
    axis (not one of the last two, which the product contracts or keeps)."""
    return (isinstance(q, UniformQuantizer) and q.enabled
            and not _per_tensor(q) and 0 < q.ch_axis % x.dim() < x.dim() - 2)


def _unfusable(q: UniformQuantizer, x: Tensor) -> Tensor:
    """The per-head QDQ of x (..., N, d) applied with the last two dims
    flattened, then reshaped back. ONNX Runtime fuses ``DequantizeLinear
    -> MatMul`` with two per-head operands into ``MatMulIntegerToFloat``,
    which rejects per-axis zero points at run time; the Reshape in between
    (constant shapes, leading dim -1: the batch-dependent one) keeps the
    product float and copies nothing."""
    mid = [int(d) for d in x.shape[1:-2]]
    n, d = int(x.shape[-2]), int(x.shape[-1])
    flat = lower_activation(q, x.reshape(-1, *mid, n * d), 'exact', 'exact')
    return flat.reshape(-1, *mid, n, d)


def check_lowering(key: str, value: str) -> str:
    """Raises ValueError naming ``key`` and the valid options."""
    if value not in LOWERINGS:
        raise ValueError(f'unknown {key}={value!r}; valid options: '
                         f'{list(LOWERINGS)}')
    return value


def integer_layers(state: QuantState, drq: str = 'exact',
                   rorq: str = 'exact') -> Dict[str, bool]:
    """``{layer name: can run as an integer kernel}`` for the quantized
    Linear / Conv layers: weights quantized and the input a per-tensor
    8-bit-container QDQ."""
    out = {}
    for name, layer in state.layers.items():
        if layer.KIND == 'MatMul':
            continue
        out[name] = (layer.w_quantizer is not None
                     and layer.w_quantizer.enabled
                     and is_plain_qdq(layer.a_quantizer, drq, rorq))
    return out


@contextlib.contextmanager
def qdq_export_mode(state: QuantState,
                    output_ranges: Optional[Dict[str, Range]] = None,
                    drq: str = 'exact', rorq: str = 'exact',
                    output_qdq: bool = True,
                    bn_folds: Optional[Dict[str, nn.Module]] = None,
                    heads: str = 'exact') -> Iterator[None]:
    """Make every quantized layer of ``state`` forward through exportable
    QDQ ops (module docstring) until the block exits.

    Args:
        state: from :func:`quantize_model`, calibrated (or loaded).
        output_ranges: ``{layer: (min, max)}`` from
            :func:`collect_output_ranges`; needed when ``output_qdq``.
        drq, rorq: 'exact' or 'int8' lowering of DRQ / RORQ quantizers.
        heads: 'exact' (per-axis QDQ; the product runs in float) or
            'int8' (one uint8 grid over the union of the heads' ranges;
            the product runs as an integer kernel) lowering of attention
            operands quantized per head.
        output_qdq: add the uint8 output QDQ to integer-capable Convs and
            2-D Linears (module docstring).
        bn_folds: ``{Conv name: BatchNorm}`` from
            :func:`~.bn_fold.conv_bn_pairs`: each BN is folded into its
            Conv's weight scales and bias (:mod:`.bn_fold`) and runs as an
            identity; the Conv's output range must then be the BN's.

    Raises:
        ValueError: an unknown lowering, an uncalibrated quantizer, or
            missing output ranges, naming the layer.
    """
    check_lowering('drq', drq)
    check_lowering('rorq', rorq)
    check_lowering('heads', heads)
    for name, q in state.quantizers():
        if not q.calibrated:
            raise ValueError(f'quantizer {name!r} is not calibrated: '
                             'calibrate or load parameters before export')
    capable = integer_layers(state, drq, rorq)
    token_convs = {name: _token_conv(layer, drq, rorq)
                   for name, layer in state.layers.items()
                   if layer.KIND == 'Conv'}
    bn_folds = bn_folds or {}
    patched, identities = [], []
    try:
        for name, layer in state.layers.items():
            rng = None
            if output_qdq and capable.get(name) and not token_convs.get(
                    name):
                if output_ranges is None or name not in output_ranges:
                    raise ValueError(f'no output range for layer {name!r}:'
                                     ' run collect_output_ranges first')
                rng = output_ranges[name]
            if layer.KIND == 'MatMul':
                fwd = (lambda a, b, _l=layer: _matmul_forward(
                    _l, a, b, drq, rorq, heads))
            elif layer.KIND == 'Linear':
                fwd = (lambda x, _l=layer, _r=rng: _linear_forward(
                    _l, x, _r, drq, rorq))
            else:
                fwd = (lambda x, _l=layer, _r=rng, _t=token_convs[name]:
                       _conv_forward(_l, x, _r, drq, rorq, _t))
            wq = getattr(layer, 'w_quantizer', None)
            if wq is not None and wq.enabled:
                # persistent buffers (the exporter's initializers), not
                # constants: the tracer folds a QuantizeLinear of a
                # constant back into float weights
                w, scale = _grid_weight(wq, layer.weight)
                if name in bn_folds:
                    bn = bn_folds[name]
                    w, scale, bias = fold_into(w, scale, layer.bias, bn)
                    layer.register_buffer('_export_bias', bias)
                    bn.forward = _identity
                    identities.append(bn)
                if layer.KIND == 'Linear':
                    w = w.t().contiguous()
                elif token_convs.get(name):
                    w = w[..., 0].t().contiguous()  # (C_in, C_out)
                layer.register_buffer('_export_weight', w)
                layer.register_buffer('_export_weight_scale', scale)
            layer.forward = fwd
            patched.append(layer)
        yield
    finally:
        for layer in patched:
            layer.__dict__.pop('forward', None)
            for buf in ('_export_weight', '_export_weight_scale',
                        '_export_bias'):
                layer._buffers.pop(buf, None)
        for bn in identities:
            bn.__dict__.pop('forward', None)


def _identity(x: Tensor) -> Tensor:
    return x


def collect_output_ranges(model: nn.Module, state: QuantState,
                          inputs: Sequence[Sequence[Tensor]],
                          bn_folds: Optional[Dict[str, nn.Module]] = None
                          ) -> Dict[str, Range]:
    """(min, max) of every quantized Linear / Conv output over ``inputs``
    (a list of ``(img, tokens, mask)``), running the fake-quantized model;
    for a Conv in ``bn_folds`` (:func:`~.bn_fold.conv_bn_pairs`), of its
    BatchNorm's output.

    Raises:
        ValueError: empty ``inputs`` or a non-finite output, naming the
            layer.
    """
    if not inputs:
        raise ValueError('collect_output_ranges needs at least one input')
    ranges: Dict[str, list] = {}

    def hook(name):
        def fn(_m, _args, out):
            lo, hi = float(out.min()), float(out.max())
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise ValueError(f'non-finite output of layer {name!r}')
            r = ranges.setdefault(name, [lo, hi])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)
        return fn

    bn_folds = bn_folds or {}
    handles = [bn_folds.get(name, layer).register_forward_hook(hook(name))
               for name, layer in state.layers.items()
               if layer.KIND != 'MatMul']
    try:
        with torch.no_grad():
            for args in inputs:  # (img, tokens, mask)
                model(*args)
    finally:
        for h in handles:
            h.remove()
    return {k: (v[0], v[1]) for k, v in ranges.items()}


def resolve_embedding(state: QuantState, embedding: str = 'auto',
                      int4: bool = True) -> str:
    """The embedding-table storage of a quantized export: 'auto' is
    'int4' when ``int4`` and every quantized weight has <= 4 bits (W4A8,
    W4A4), else 'int8'; other modes are returned as given.

    Raises:
        ValueError: an unknown mode, naming the valid options.
    """
    if check_embedding_mode(embedding) != 'auto':
        return embedding
    bits = [layer.w_quantizer.bits for layer in state.layers.values()
            if getattr(layer, 'w_quantizer', None) is not None
            and layer.w_quantizer.enabled]
    return 'int4' if int4 and bits and max(bits) <= 4 else 'int8'


def export_qdq(model: nn.Module, state: QuantState,
               inputs: Sequence[Tensor], path: str,
               range_inputs: Sequence[Sequence[Tensor]],
               drq: str = 'exact', rorq: str = 'exact',
               output_qdq: bool = True, int4: bool = True,
               embedding: str = 'auto', heads: str = 'exact') -> dict:
    """Export the calibrated fake-quantized ``model`` as a QDQ ONNX file.

    Args:
        model, state: the quantized model and its :class:`QuantState`.
        inputs: example ``(img, tokens, mask)`` fixing H, W, L.
        path: output ``.onnx`` file.
        range_inputs: calibration inputs for the output ranges
            (:func:`collect_output_ranges`; unused when not ``output_qdq``).
        drq, rorq, heads, output_qdq, int4: see :func:`qdq_export_mode` and
            :func:`fold_weight_quantizers`.
        embedding: storage of the word-embedding tables
            (:mod:`.embedding`): 'auto' (default: int4 for <= 4-bit
            weights, else int8, see :func:`resolve_embedding`), 'int8',
            'int4' or 'float' (kept FP32 like the simulation).

    Returns:
        dict: ``folded`` (int8 / int4 weight counts), ``integer_capable``
        (Linear / Conv layers lowered to a fusable QDQ pattern),
        ``linear_conv`` (quantized Linear / Conv layers), ``bn_folded``
        (BatchNorms folded into their Conv, :mod:`.bn_fold`),
        ``embeddings`` (``{table: 'int8' | 'int4 (block N)'}``, empty for
        'float').
    """
    import onnx
    from .export import export_onnx
    embedding = resolve_embedding(state, embedding, int4)
    folds = conv_bn_pairs(model, state, inputs)
    ranges = (collect_output_ranges(model, state, range_inputs, folds)
              if output_qdq else None)
    with qdq_export_mode(state, ranges, drq, rorq, output_qdq, folds,
                         heads), \
            embedding_export_mode(model, embedding) as tables:
        export_onnx(model, inputs, path, constant_folding=False)
    graph_model = onnx.load(path)
    folded = fold_weight_quantizers(graph_model, int4=int4)
    onnx.save(graph_model, path)
    capable = integer_layers(state, drq, rorq)
    return dict(folded=folded, integer_capable=sum(capable.values()),
                linear_conv=len(capable), bn_folded=len(folds),
                embeddings=tables)
