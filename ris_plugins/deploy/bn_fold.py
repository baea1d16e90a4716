"""Fold an inference BatchNorm into the quantized Conv before it, for the
QDQ export.

The simulation keeps BN in float after the fake-quantized Conv (as
PTQ4RIS calibrates it). BN in eval mode is a per-channel affine map,
``BN(y) = a * y + b`` with ``a = gamma / sqrt(running_var + eps)`` and
``b = beta - running_mean * a``, so

    BN(Conv(x, s_w * codes) + bias) = Conv(x, (a * s_w) * codes) + a * bias + b

exactly (up to float32 round-off): the integer weight codes are unchanged,
only each output channel's weight scale and the bias change (``a < 0``
gives a negative per-channel scale, which ONNX Runtime's ``QLinearConv``
handles like a positive one). In the exported graph the float
``BatchNormalization`` between two integer convolutions is gone, and with
it the layout Transposes ONNX Runtime had to put around it (its integer
convolutions run channels-last); the Conv's output requantization then
measures the BN output.
"""
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm

from ..quantization.quantize import QuantState


def _foldable(bn: nn.Module) -> bool:
    return (isinstance(bn, _BatchNorm) and not bn.training
            and bn.track_running_stats and bn.running_mean is not None)


def conv_bn_pairs(model: nn.Module, state: QuantState,
                  inputs: Sequence[Tensor]) -> Dict[str, nn.Module]:
    """``{quantized Conv name: the BatchNorm that normalises its output}``,
    found by running ``model(*inputs)`` once (``(img, tokens, mask)``) and
    matching each eval-mode BatchNorm's input tensor to the output of a
    quantized Conv with weights quantized. A Conv (or BN) called more than
    once per forward is paired only if every call pairs the same two.

    Assumes the BN is the only reader of that Conv output, as in
    ``conv -> bn -> act`` (mmcv ``ConvModule``, ResNet blocks): the fold
    replaces the Conv output by the BN output.
    """
    convs = {name: layer for name, layer in state.layers.items()
             if layer.KIND == 'Conv' and getattr(layer, 'w_quantizer', None)
             is not None and layer.w_quantizer.enabled}
    produced: Dict[int, str] = {}
    keep = []  # holds the outputs so their ids stay unique
    seen: Dict[str, set] = {}
    bn_users: Dict[int, set] = {}

    def on_conv(name):
        def hook(_m, _args, out):
            keep.append(out)
            produced[id(out)] = name
        return hook

    def on_bn(bn):
        def hook(_m, args):
            src = produced.get(id(args[0]))
            bn_users.setdefault(id(bn), set()).add(src)
            if src is not None:
                seen.setdefault(src, set()).add(id(bn))
        return hook

    bns = {id(m): m for m in model.modules() if _foldable(m)}
    handles = [c.register_forward_hook(on_conv(n)) for n, c in convs.items()]
    handles += [bn.register_forward_pre_hook(on_bn(bn))
                for bn in bns.values()]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
    pairs = {}
    for name, ids in seen.items():
        if len(ids) == 1:
            bn_id = next(iter(ids))
            if bn_users[bn_id] == {name}:
                pairs[name] = bns[bn_id]
    return pairs


def bn_affine(bn: nn.Module) -> Tuple[Tensor, Tensor]:
    """``(a, b)``, each (C,) float32, with ``bn(y) = a * y + b`` per
    channel for an eval-mode BatchNorm (torch ``_BatchNorm``)."""
    a = torch.rsqrt(bn.running_var.float() + bn.eps)  # (C,)
    b = -bn.running_mean.float() * a  # (C,)
    if bn.affine:
        a, b = a * bn.weight.float(), b * bn.weight.float() + bn.bias.float()
    return a.detach(), b.detach()


def fold_into(weight: Tensor, scale: Tensor, bias: Optional[Tensor],
              bn: nn.Module) -> Tuple[Tensor, Tensor, Tensor]:
    """The Conv's grid weight (C_out, C_in / g, *k), per-output-channel
    scale (C_out,) and bias (C_out,) or None with ``bn`` folded in:
    ``(a * weight, a * scale, a * bias + b)``; ``weight / scale`` (the
    integer codes) is unchanged.

    Raises:
        ValueError: the BN has a different channel count, naming both.
    """
    a, b = bn_affine(bn)
    if a.numel() != weight.shape[0]:
        raise ValueError(f'cannot fold {bn} into a Conv with '
                         f'{weight.shape[0]} output channels')
    shape = (-1, ) + (1, ) * (weight.dim() - 1)
    bias = b if bias is None else a * bias.detach().float() + b
    return weight * a.view(shape), scale * a, bias
