"""Folding inference BatchNorms into the quantized Conv before them
(``ris_plugins.deploy.bn_fold``) for the QDQ export."""
import collections

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ris_plugins.deploy.bn_fold import bn_affine, conv_bn_pairs, fold_into
from ris_plugins.quantization import calibrate, quantize_model

from ..conftest import MINMAX


def _random_bn(c: int, g: torch.Generator, negative: bool = True):
    bn = nn.BatchNorm2d(c).eval()
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=g))
        bn.running_var.copy_(torch.rand(c, generator=g) + 0.1)
        bn.weight.copy_(torch.randn(c, generator=g) if negative else
                        torch.rand(c, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g))
    return bn


def test_bn_affine_equals_batchnorm():
    g = torch.Generator().manual_seed(0)
    bn = _random_bn(6, g)
    y = torch.randn(2, 6, 3, 3, generator=g)
    a, b = bn_affine(bn)
    torch.testing.assert_close(a.view(1, -1, 1, 1) * y + b.view(1, -1, 1, 1),
                               bn(y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('with_bias', [True, False])
def test_fold_keeps_codes_and_output(with_bias):
    """Negative BN weights included: the integer codes are unchanged and
    Conv(x, folded) equals BN(Conv(x)) to float32 round-off."""
    g = torch.Generator().manual_seed(1)
    scale = torch.rand(6, generator=g) * 0.01 + 0.001  # (C_out,)
    codes = torch.randint(-128, 128, (6, 4, 3, 3), generator=g).float()
    weight = codes * scale.view(-1, 1, 1, 1)
    bias = torch.randn(6, generator=g) if with_bias else None
    bn = _random_bn(6, g)
    assert (bn.weight < 0).any()
    w2, s2, b2 = fold_into(weight, scale, bias, bn)
    assert torch.equal(torch.round(w2 / s2.view(-1, 1, 1, 1)), codes)
    x = torch.randn(2, 4, 5, 5, generator=g)
    torch.testing.assert_close(F.conv2d(x, w2, b2, padding=1),
                               bn(F.conv2d(x, weight, bias, padding=1)),
                               rtol=1e-4, atol=1e-4)


def test_fold_refuses_channel_mismatch():
    with pytest.raises(ValueError, match='5 output channels'):
        fold_into(torch.ones(5, 2, 1, 1), torch.ones(5), None,
                  nn.BatchNorm2d(4).eval())


class _Net(nn.Module):
    """conv_a -> bn_a (pairs); conv_b -> relu -> bn_b (BN reads the ReLU,
    not the Conv); conv_c and conv_d -> shared bn_s (two Convs: neither
    pairs)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
        self.bn_a = _random_bn(4, g)
        self.conv_b = nn.Conv2d(4, 4, 1)
        self.bn_b = _random_bn(4, g)
        self.conv_c = nn.Conv2d(4, 4, 1)
        self.conv_d = nn.Conv2d(4, 4, 1)
        self.bn_s = _random_bn(4, g)

    def forward(self, x):
        x = self.bn_a(self.conv_a(x))
        x = self.bn_b(F.relu(self.conv_b(x)))
        return self.bn_s(self.conv_c(x)) + self.bn_s(self.conv_d(x))


def test_conv_bn_pairs_only_exclusive_conv_then_bn():
    torch.manual_seed(0)
    net = _Net().eval()
    state = quantize_model(net, dict(MINMAX, w_bits=8, a_bits=8))
    x = torch.randn(2, 3, 8, 8)
    calibrate(state, lambda i: net(x), range(1))
    pairs = conv_bn_pairs(net, state, (x, ))
    assert pairs == {'conv_a': net.bn_a}


def test_tiny_model_export_has_no_batchnorm(tiny_model_cfg, tmp_path):
    """The tiny baseline's ResNet BNs fold: the ONNX Runtime graph keeps no
    BatchNormalization (35 before) and fewer layout Transposes (69 -> 24
    measured), and its logits stay as close to the simulation as the
    quantization error."""
    import onnx

    from ris_plugins.deploy import ort_session
    from ris_plugins.deploy.qdq import export_qdq

    from .test_qdq import _ort_vs_sim, _tiny_quantized
    model, state, inputs = _tiny_quantized(tiny_model_cfg, 8, 8)
    path, opt = str(tmp_path / 'm.onnx'), str(tmp_path / 'm.opt.onnx')
    info = export_qdq(model, state, inputs[0], path, inputs,
                      embedding='float')
    assert info['bn_folded'] > 0
    ort_session(path, optimized_path=opt)
    ops = collections.Counter(n.op_type for n in onnx.load(opt).graph.node)
    assert ops['BatchNormalization'] == 0, ops
    assert ops['Transpose'] < 40, ops
    deployed, quant_err = _ort_vs_sim(model, state, path, inputs)
    assert deployed <= 1.5 * quant_err, (deployed, quant_err)
    # the export leaves the model as it was: BNs run again
    assert all('forward' not in m.__dict__ for m in model.modules()
               if isinstance(m, nn.BatchNorm2d))


def test_negative_bn_weights_run_in_onnx_runtime(tmp_path):
    """Conv -> BN (negative weights, so negative folded scales) -> ReLU ->
    Conv -> BN: ONNX Runtime runs both as QLinearConv with no
    BatchNormalization left, and its output stays as close to the
    simulation as with the BNs kept in float."""
    import onnx

    from ris_plugins.deploy import ort_session
    from ris_plugins.deploy.onnx_graph import fold_weight_quantizers
    from ris_plugins.deploy.qdq import (collect_output_ranges,
                                        qdq_export_mode)

    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _random_bn(8, g),
                        nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                        _random_bn(8, g)).eval()
    assert (net[1].weight < 0).any() and (net[4].weight < 0).any()
    state = quantize_model(net, dict(MINMAX, w_bits=8, a_bits=8))
    xs = [torch.randn(2, 3, 12, 12, generator=g) for _ in range(4)]
    calibrate(state, lambda i: net(xs[i]), range(4))
    with torch.no_grad():
        sim = net(xs[0])

    def deployed(pairs, name):
        ranges = collect_output_ranges(net, state, [(x, ) for x in xs],
                                       pairs)
        path = str(tmp_path / f'{name}.onnx')
        with torch.no_grad(), qdq_export_mode(state, ranges, 'int8', 'int8',
                                              True, pairs):
            torch.onnx.export(net, (xs[0], ), path, dynamo=False,
                              opset_version=17, input_names=['x'],
                              do_constant_folding=False)
        graph = onnx.load(path)
        fold_weight_quantizers(graph)
        onnx.save(graph, path)
        sess = ort_session(path, optimized_path=path + '.opt.onnx')
        ops = collections.Counter(
            n.op_type for n in onnx.load(path + '.opt.onnx').graph.node)
        out = torch.from_numpy(sess.run(None, {'x': xs[0].numpy()})[0])
        return (out - sim).abs().mean().item(), ops

    pairs = conv_bn_pairs(net, state, (xs[0], ))
    assert set(pairs) == {'0', '3'}
    err_folded, ops = deployed(pairs, 'folded')
    err_float_bn, ops_float_bn = deployed({}, 'float_bn')
    assert ops['QLinearConv'] == 2 and ops['BatchNormalization'] == 0, ops
    assert ops_float_bn['BatchNormalization'] == 2, ops_float_bn
    assert err_folded <= 1.5 * err_float_bn + 1e-6, (err_folded,
                                                     err_float_bn)
