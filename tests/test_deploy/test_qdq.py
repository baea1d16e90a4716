"""QDQ lowering of calibrated quantizers: every quantizer's ONNX subgraph
reproduces its fake quantization in ONNX Runtime, a tiny W8A8 / W4A4 model
matches the simulation, ONNX Runtime runs integer kernels, weights are
stored as int8 / int4, and bad parameters are named. The word-embedding
table, which the simulation keeps float, is exported float here
(``embedding='float'``); its integer storage is tested in
test_embedding.py."""
import glob
import os.path as osp

import pytest
import torch
import torch.nn as nn

from mmseg.registry import MODELS
from ris_plugins.models.utils.matmul import MatMul
from ris_plugins.deploy import ort_session, run_session
from ris_plugins.deploy.onnx_graph import kernel_counts
from ris_plugins.deploy.qdq import (collect_output_ranges, export_qdq,
                                    lower_activation, qdq_export_mode)
from ris_plugins.quantization import calibrate, quantize_model
from ris_plugins.quantization.quantizers import (RORQQuantizer,
                                                 TwinUniformGELUQuantizer,
                                                 TwinUniformSoftmaxQuantizer,
                                                 UniformQuantizer)
from ris_plugins.utils.synthetic import synthetic_inputs

from ..conftest import MINMAX, ROOT

ort = pytest.importorskip('onnxruntime')


class _Lowered(nn.Module):
    def __init__(self, q):
        super().__init__()
        self.q = q

    def forward(self, x):
        return lower_activation(self.q, x)


def _ort_of(module, x, path):
    torch.onnx.export(module, (x, ), path, dynamo=False, opset_version=17,
                      input_names=['x'], do_constant_folding=False)
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return torch.from_numpy(sess.run(None, {'x': x.numpy()})[0])


def _calibrated(q, x):
    q.init_params(x)
    q.enabled = True
    q.name = 'q'
    return q


def _quantizers():
    g = torch.Generator().manual_seed(0)
    act = torch.randn(4, 6, 5, generator=g) * 3 + 1
    probs = torch.softmax(torch.randn(2, 3, 8, 8, generator=g) * 4, -1)
    gelu = nn.functional.gelu(torch.randn(4, 50, generator=g) * 2)
    heads = torch.randn(2, 3, 8, 4, generator=g)
    text = torch.randn(2, 20, 16, generator=g)
    text[0, 0, :3] = 40.0  # outliers -> several RORQ bands
    return [
        ('uniform asym 8b', UniformQuantizer(8, symmetric=False), act),
        ('uniform asym 4b', UniformQuantizer(4, symmetric=False), act),
        ('uniform sym 6b', UniformQuantizer(6), act),
        ('uniform per-head 5b',
         UniformQuantizer(5, granularity='head', ch_axis=1), heads),
        ('uniform 1-head 8b',
         UniformQuantizer(8, symmetric=False, granularity='head', ch_axis=1),
         heads[:, :1]),
        ('drq-softmax 4b', TwinUniformSoftmaxQuantizer(4, faithful=False),
         probs),
        ('drq-softmax 8b', TwinUniformSoftmaxQuantizer(8, faithful=False),
         probs),
        ('drq-softmax faithful 4b',
         TwinUniformSoftmaxQuantizer(4, faithful=True), probs),
        ('drq-softmax faithful 8b',
         TwinUniformSoftmaxQuantizer(8, faithful=True), probs),
        ('drq-gelu 4b', TwinUniformGELUQuantizer(4), gelu),
        ('rorq 4b', RORQQuantizer(4, faithful=False), text),
        ('rorq faithful 8b', RORQQuantizer(8, faithful=True), text),
    ]


@pytest.mark.parametrize('case', range(len(_quantizers())),
                         ids=[c[0] for c in _quantizers()])
def test_lowering_reproduces_each_quantizer(case, tmp_path):
    """ONNX Runtime's QuantizeLinear divides and rounds half to even like
    the simulation, so each lowered quantizer gives the simulation's values
    up to one float32 rounding of the dequantized value (|y| * 2^-23)."""
    _, q, x = _quantizers()[case]
    q = _calibrated(q, x)
    # x, then out-of-range values (x < 0, x > 1 for softmax inputs) in
    # whole rows of x's shape
    extra = torch.linspace(-5, 50, 5 * x[0].numel())
    probe = torch.cat([x.flatten(), extra]).reshape(-1, *x.shape[1:])
    out = _ort_of(_Lowered(q), probe, str(tmp_path / 'q.onnx'))
    ref = q.quantize(probe)
    tol = 4 * torch.finfo(torch.float32).eps * ref.abs().max().item() + 1e-7
    assert (out - ref).abs().max().item() <= tol


def test_more_than_8_bits_is_refused():
    q = _calibrated(UniformQuantizer(12, symmetric=False), torch.randn(10))
    with pytest.raises(ValueError, match=r"'q'.*12-bit"):
        lower_activation(q, torch.randn(10))


def _tiny_quantized(cfg, w_bits, a_bits, n=6):
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    state = quantize_model(model, dict(MINMAX, w_bits=w_bits,
                                       a_bits=a_bits))
    inputs = synthetic_inputs(cfg, n)
    calibrate(state, lambda i: model(*inputs[i]), range(n))
    return model, state, inputs


def _ort_vs_sim(model, state, path, inputs, opt=None):
    """(mean |ORT - simulation|, mean |FP - simulation|) of the logits."""
    sess = ort_session(path, optimized_path=opt)
    deployed, quant, fp = [], [], []
    for x in inputs:
        with torch.no_grad():
            quant.append(model(*x))
        deployed.append(torch.from_numpy(run_session(sess, *x)))
    for _, q in state.quantizers():
        q.enabled = False
    for x in inputs:
        with torch.no_grad():
            fp.append(model(*x))
    for _, q in state.quantizers():
        q.enabled = True
    mean = lambda a, b: torch.stack([(u - v).abs().mean()  # noqa
                                     for u, v in zip(a, b)]).mean().item()
    return mean(deployed, quant), mean(fp, quant)


def test_w8a8_without_requantization_equals_simulation(
        tiny_model_cfg, tmp_path):
    """Without output requantization the deployed graph does the
    simulation's arithmetic: each quantizer alone matches it to float32
    round-off (test above). Through a whole model, float32 summation order
    moves a few activations across a rounding boundary, i.e. by one step,
    so the logits are compared against the size of the quantization error
    itself: the deployed model must be at least 2x closer to the
    simulation than the simulation is to FP (measured: 2.6x)."""
    model, state, inputs = _tiny_quantized(tiny_model_cfg, 8, 8)
    path = str(tmp_path / 'w8a8.onnx')
    info = export_qdq(model, state, inputs[0], path, inputs,
                      output_qdq=False, embedding='float')
    assert info['folded']['int8'] == info['linear_conv']  # all int8 weights
    deployed, quant_err = _ort_vs_sim(model, state, path, inputs)
    assert deployed <= quant_err / 2, (deployed, quant_err)


def test_w8a8_integer_kernels_close_to_simulation(tiny_model_cfg, tmp_path):
    """With the uint8 output requantization ONNX Runtime runs the layers as
    integer kernels. The requantization adds one more 8-bit rounding per
    layer, so the deployed logits may move from the simulation by about
    as much as W8A8 moves from FP, not more than 1.5x (measured: 1.0x)."""
    model, state, inputs = _tiny_quantized(tiny_model_cfg, 8, 8)
    path = str(tmp_path / 'w8a8.onnx')
    opt = str(tmp_path / 'w8a8.opt.onnx')
    info = export_qdq(model, state, inputs[0], path, inputs,
                      embedding='float')
    deployed, quant_err = _ort_vs_sim(model, state, path, inputs, opt)
    kernels = kernel_counts(opt)
    assert kernels['integer'] >= info['integer_capable'] > 0, (kernels,
                                                               info)
    assert deployed <= 1.5 * quant_err, (deployed, quant_err)
    # the mask path stays float: no QuantizeLinear reads the text mask
    import onnx
    graph = onnx.load(path).graph
    producers = {o: n for n in graph.node for o in n.output}

    def reads_mask(name, depth=0):
        if name == 'mask':
            return True
        node = producers.get(name)
        return depth < 6 and node is not None and node.op_type in (
            'Cast', 'Unsqueeze', 'Sub', 'Mul', 'Slice', 'Expand') and any(
                reads_mask(i, depth + 1) for i in node.input)
    assert not any(reads_mask(n.input[0]) for n in graph.node
                   if n.op_type == 'QuantizeLinear')


def test_w4a4_weights_stored_as_int4(tiny_model_cfg, tmp_path):
    """4-bit weights are stored as INT4 (smaller file) and the 4-bit
    activation grids run in 8-bit containers with the simulation's values
    (same bound as W8A8: at least 2x closer than the quantization error;
    measured 3.2x)."""
    model, state, inputs = _tiny_quantized(tiny_model_cfg, 4, 4)
    path = str(tmp_path / 'w4.onnx')
    info = export_qdq(model, state, inputs[0], path, inputs,
                      output_qdq=False, embedding='float')
    assert info['folded']['int4'] == info['linear_conv']
    deployed, quant_err = _ort_vs_sim(model, state, path, inputs)
    assert deployed <= quant_err / 2, (deployed, quant_err)
    path8 = str(tmp_path / 'w4i8.onnx')
    info8 = export_qdq(model, state, inputs[0], path8, inputs,
                       output_qdq=False, int4=False, embedding='float')
    assert info8['folded']['int8'] == info['linear_conv']
    assert osp.getsize(path) < osp.getsize(path8)


def test_uncalibrated_quantizer_is_named(tiny_model_cfg):
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg.model).eval()
    state = quantize_model(model, dict(MINMAX, w_bits=8, a_bits=8))
    with pytest.raises(ValueError, match='not calibrated'):
        with qdq_export_mode(state, {}):
            pass
    assert all('forward' not in layer.__dict__
               for layer in state.layers.values())


PTQ_CONFIGS = sorted(glob.glob(
    osp.join(ROOT, 'projects', 'ptq4ris', 'configs', 'demo', '*.py')))


@pytest.mark.slow
@pytest.mark.parametrize('config', PTQ_CONFIGS,
                         ids=[osp.basename(c)[:24] for c in PTQ_CONFIGS])
def test_qdq_export_of_every_ptq_demo_config(config, tmp_path):
    """Every quantized demo config (its own PTQ4RIS ``quant_cfg``: DRQ,
    RORQ, first / last layer FP; random weights, 2 synthetic calibration
    samples) exports as QDQ with output requantization and the integer
    embedding table, as ``pytorch2onnx.py --ptq-params`` does, passes
    ``onnx.checker`` and runs in ONNX Runtime. LAVT's PWAM
    (``Conv1d -> InstanceNorm1d``) once failed here: the exporter needs
    the channel count that a DequantizeLinear output does not carry
    (``deploy/patches.py``); so did CRIS's VL decoder with DRQ ``int8``
    (ONNX Runtime fused the 8-bit softmax operand with the per-head V)."""
    import onnx
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    state = quantize_model(model, cfg.ptq.quant_cfg.to_dict())
    inputs = synthetic_inputs(cfg, 2)
    calibrate(state, lambda i: model(*inputs[i]), range(2))
    path = str(tmp_path / 'q.onnx')
    # the lowerings of pytorch2onnx.py's defaults
    info = export_qdq(model, state, inputs[0], path, inputs, drq='int8',
                      rorq='exact')
    onnx.checker.check_model(path)
    # every weight stored as an integer: no QuantizeLinear of a constant
    # is left (torch's exporter may share one initializer between layers
    # with equal weights, so the folded count can be below the layers')
    graph = onnx.load(path).graph
    constants = {i.name for i in graph.initializer} | {
        o for n in graph.node if n.op_type == 'Constant' for o in n.output}
    assert not [n.name for n in graph.node if n.op_type == 'QuantizeLinear'
                and n.input[0] in constants]
    assert 0 < sum(info['folded'].values()) <= info['linear_conv']
    logits = run_session(ort_session(path), *inputs[1])
    with torch.no_grad():
        ref = model(*inputs[1])
    assert logits.shape == tuple(ref.shape)
    assert torch.isfinite(torch.from_numpy(logits)).all()


class _Attention(nn.Module):
    """softmax(q kᵀ) v with the products as ``MatMul`` children (as in
    PixelWordAttention); q, k, v (B, h, N, d)."""

    def __init__(self):
        super().__init__()
        self.matmul1 = MatMul()
        self.matmul2 = MatMul()

    def forward(self, q, k, v):
        return self.matmul2(self.matmul1(q, k.transpose(-1, -2)).softmax(-1),
                            v)


@pytest.mark.parametrize('heads,drq,mode,kernels', [
    (1, 'int8', 'exact', (2, 0)), (1, 'exact', 'exact', (1, 1)),
    (2, 'int8', 'exact', (0, 2)), (2, 'int8', 'int8', (2, 0))])
def test_per_head_attention_products(heads, drq, mode, kernels, tmp_path):
    """PTQ4RIS quantizes vision attention operands per head. With one head
    that is one scale for the tensor, so the products lower to per-tensor
    QDQ and run as integer kernels (LAVT's PWAMs, Swin stage 1 of
    LAVT-small; ``softmax(.) V`` too when its DRQ operand is lowered
    'int8'); with more heads they stay float, and ONNX Runtime must not
    fuse the per-head operands into MatMulIntegerToFloat (it rejects
    per-axis zero points at run time), unless ``heads='int8'`` puts each
    operand on one 8-bit grid over its heads (integer kernels). Lowered
    'exact', ONNX Runtime gives the simulation's values (only float32
    summation order differs); 'int8' stays within one step of the
    coarsest head's grid."""
    torch.manual_seed(0)
    model = _Attention().eval()
    state = quantize_model(model, dict(w_bits=8, a_bits=8, global_qconfig=dict(
        m_qscheme=dict(type='UniformQuantizer', symmetric=False,
                       granularity='head', ch_axis=1)), rules=[
            dict(pattern='matmul2', types=['MatMul'], a_qscheme=dict(
                type='TwinUniformSoftmaxQuantizer'))]))
    inputs = [tuple(torch.randn(2, heads, 16, 8) for _ in range(3))
              for _ in range(3)]
    calibrate(state, lambda i: model(*inputs[i]), range(3))
    path, opt = str(tmp_path / 'attn.onnx'), str(tmp_path / 'opt.onnx')
    with qdq_export_mode(state, drq=drq, heads=mode), torch.no_grad():
        torch.onnx.export(model, inputs[0], path, dynamo=False,
                          opset_version=17, input_names=['q', 'k', 'v'],
                          do_constant_folding=False)
    sess = ort.InferenceSession(path, _optimized_to(opt),
                                providers=['CPUExecutionProvider'])
    with torch.no_grad():
        ref = model(*inputs[1])
    out = sess.run(None, dict(zip('qkv', (t.numpy() for t in inputs[1]))))
    err = (torch.from_numpy(out[0]) - ref).abs().max().item()
    if drq == 'exact' or heads > 1 and mode == 'exact':
        assert err < 1e-5
    else:  # other grids: bounded by the quantization error itself
        fp = inputs[1][0] @ inputs[1][1].transpose(-1, -2)
        fp = fp.softmax(-1) @ inputs[1][2]
        assert 0 < err <= 2 * (fp - ref).abs().max().item()
    counts = kernel_counts(opt)
    assert (counts['integer'], counts['float']) == kernels, counts


def _optimized_to(path):
    opts = ort.SessionOptions()
    opts.optimized_model_filepath = path
    return opts


def test_token_conv_runs_as_a_token_linear(tmp_path):
    """A quantized 1x1 Conv1d on (B, C, N) tokens (LAVT's PWAM) exports as
    ``DQ -> MatMul`` with W^T per output column: ONNX Runtime runs it as
    MatMulIntegerToFloat with a float output, so unlike a QLinearConv it
    needs no output requantization and gives the simulation's values."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(8, 6, 1), nn.GELU(),
                          nn.Conv1d(6, 4, 3, padding=1)).eval()
    state = quantize_model(model, dict(MINMAX, w_bits=8, a_bits=8))
    xs = [torch.randn(2, 8, 10) for _ in range(3)]
    calibrate(state, lambda i: model(xs[i]), range(3))
    ranges = collect_output_ranges(model, state, [(x, ) for x in xs])
    path, opt = str(tmp_path / 'conv.onnx'), str(tmp_path / 'opt.onnx')
    with qdq_export_mode(state, ranges), torch.no_grad():
        torch.onnx.export(model, (xs[0], ), path, dynamo=False,
                          opset_version=17, input_names=['x'],
                          dynamic_axes={'x': {0: 'batch'}},
                          do_constant_folding=False)
    sess = ort.InferenceSession(path, _optimized_to(opt),
                                providers=['CPUExecutionProvider'])
    counts = kernel_counts(opt)
    assert counts.get('MatMulIntegerToFloat') == 1, counts  # the 1x1 Conv1d
    assert counts.get('QLinearConv') == 1, counts  # the 3-tap one
    x = torch.randn(3, 8, 10)
    with torch.no_grad():
        mid = model[1](model[0](x))  # the simulation up to the GELU
    first = nn.Sequential(model[0], model[1])
    path1 = str(tmp_path / 'first.onnx')
    with qdq_export_mode(state, ranges), torch.no_grad():
        torch.onnx.export(first, (x, ), path1, dynamo=False,
                          opset_version=17, input_names=['x'],
                          do_constant_folding=False)
    out = ort.InferenceSession(path1, providers=[
        'CPUExecutionProvider']).run(None, {'x': x.numpy()})[0]
    assert (torch.from_numpy(out) - mid).abs().max() < 1e-5
    assert sess.run(None, {'x': x.numpy()})[0].shape == (3, 4, 10)
