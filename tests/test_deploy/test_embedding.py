"""Integer word-embedding tables in quantized ONNX exports: the file stores
the table as int8 (W8) or 4-bit (W4, GatherBlockQuantized), ONNX Runtime
gathers the integer rows and equals a PyTorch reference that rounds the
table the same way, the file shrinks by the table's bytes, FP32 exports
keep the float table, and bad options / tables are named."""
import copy
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn as nn

from mmseg.registry import MODELS
from ris_plugins.deploy import export_onnx, ort_session, run_session
from ris_plugins.deploy.embedding import (embedding_export_mode,
                                          word_embedding_tables)
from ris_plugins.deploy.qdq import export_qdq, resolve_embedding
from ris_plugins.quantization import calibrate, quantize_model
from ris_plugins.utils.synthetic import synthetic_inputs

from ..conftest import MINMAX, tiny_cfg

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

TABLE = 'text_encoder.bert.embeddings.word_embeddings'
EPS = float(np.finfo(np.float32).eps)


# ------------------------------------------------------------ references
def rounded(w: torch.Tensor, bits: int, block: int) -> torch.Tensor:
    """The table after symmetric rounding, written out independently of
    the code under test: per block of ``block`` columns of a row,
    step = max|w| / (2^(b-1) - 1), w -> step * round(w / step)."""
    qmax = 2**(bits - 1) - 1
    v, c = w.shape
    b = w.detach().float().reshape(v, c // block, block)
    step = b.abs().amax(-1, keepdim=True) / qmax
    step = torch.where(step > 0, step, torch.ones_like(step))
    return (torch.round(b / step).clamp(-qmax, qmax) * step).reshape(v, c)


def initializers(path):
    from onnx import numpy_helper
    return {i.name: numpy_helper.to_array(i)
            for i in onnx.load(path).graph.initializer}


@pytest.fixture(scope='module')
def cfg(tmp_path_factory):
    root = tmp_path_factory.mktemp('embedding')
    return tiny_cfg(str(root / 'no_data'), str(root / 'work'))


def _build(cfg):
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


@pytest.fixture(scope='module')
def quantized(cfg):
    """{w_bits: (model, state)}: the tiny baseline calibrated W8A8 / W4A8
    on 4 synthetic inputs."""
    out = {}
    inputs = synthetic_inputs(cfg, 4)
    for w_bits in (8, 4):
        model = _build(cfg)
        state = quantize_model(model, dict(MINMAX, w_bits=w_bits, a_bits=8))
        calibrate(state, lambda i, m=model: m(*inputs[i]), range(4))
        out[w_bits] = (model, state)
    return out


# ------------------------------------------------------------- the file
@pytest.mark.parametrize('w_bits', [8, 4])
def test_quantized_export_stores_integer_table(cfg, quantized, w_bits,
                                               tmp_path):
    """Default (auto): W8A8 stores the (V, C) table as int8 with (V, 1)
    float32 scales, W4A8 as 4-bit (V, C/2 bytes, GatherBlockQuantized,
    block = C = 32 here: one scale per row); no float copy of the table
    is left, and the file is smaller than the float-table export by
    exactly the table's bytes."""
    model, state = quantized[w_bits]
    inputs = synthetic_inputs(cfg, 2)
    weight = model.text_encoder.bert.embeddings.word_embeddings.weight
    v, c = weight.shape
    path = str(tmp_path / 'int.onnx')
    info = export_qdq(model, state, inputs[0], path, inputs)
    want = 'int8' if w_bits == 8 else f'int4 (block {c})'
    assert info['embeddings'] == {TABLE: want}
    inits = initializers(path)
    shapes = {k: (a.dtype, a.shape) for k, a in inits.items()}
    assert not any(s == (np.float32, (v, c)) for s in shapes.values())
    graph = onnx.load(path).graph
    if w_bits == 8:
        assert (np.dtype(np.int8), (v, c)) in shapes.values()
        assert (np.dtype(np.float32), (v, 1)) in shapes.values()
        table_bytes = v * c + 4 * v
    else:
        assert (np.dtype(np.uint8), (v, c // 2)) in shapes.values()
        node = next(n for n in graph.node
                    if n.op_type == 'GatherBlockQuantized')
        attrs = {a.name: a.i for a in node.attribute}
        assert node.domain == 'com.microsoft'
        assert attrs == dict(gather_axis=0, quantize_axis=1,
                             block_size=c, bits=4)
        table_bytes = v * c // 2 + 4 * v
    fp_path = str(tmp_path / 'float.onnx')
    info_fp = export_qdq(model, state, inputs[0], fp_path, inputs,
                         embedding='float')
    assert info_fp['embeddings'] == {}
    saved = osp.getsize(fp_path) - osp.getsize(path)
    expected = 4 * v * c - table_bytes
    assert abs(saved - expected) <= 2048, (saved, expected)
    # the deployed model runs and stays close to the float-table one
    out = run_session(ort_session(path), *inputs[1])
    ref = run_session(ort_session(fp_path), *inputs[1])
    assert np.isfinite(out).all()
    assert np.abs(out - ref).mean() <= 0.1 * np.abs(ref).mean()


def test_fp32_export_keeps_float_table(cfg, tmp_path):
    model = _build(cfg)
    path = export_onnx(model, synthetic_inputs(cfg, 1)[0],
                       str(tmp_path / 'fp.onnx'))
    weight = model.text_encoder.bert.embeddings.word_embeddings.weight
    tables = [a for a in initializers(path).values()
              if a.shape == tuple(weight.shape)]
    assert len(tables) == 1 and tables[0].dtype == np.float32
    np.testing.assert_array_equal(tables[0], weight.detach().numpy())


# ------------------------------------------------------ the arithmetic
@pytest.mark.parametrize('mode,bits', [('int8', 8), ('int4', 4)])
def test_ort_equals_reference_with_rounded_table(cfg, mode, bits,
                                                 tmp_path):
    """The whole tiny model, float except the table: ONNX Runtime with the
    integer table equals PyTorch with the table rounded per row by the
    test's own reference to float32 round-off (<= 1e-5 on logits of
    magnitude ~0.1; measured 1.3e-7), while the rounding itself moves the
    logits by more than 1e-4 (measured 3.8e-4 int8, 6e-3 int4), so a
    graph that gathered the float table would fail."""
    model = _build(cfg)
    inputs = synthetic_inputs(cfg, 3, seed=1)
    path = str(tmp_path / f'{mode}.onnx')
    with embedding_export_mode(model, mode) as tables:
        export_onnx(model, inputs[0], path)
    assert list(tables) == [TABLE]
    ref = copy.deepcopy(model)
    table = ref.text_encoder.bert.embeddings.word_embeddings
    c = table.weight.shape[1]
    with torch.no_grad():
        table.weight.copy_(rounded(table.weight, bits, c))
    sess = ort_session(path)
    for x in inputs:
        out = run_session(sess, *x)
        with torch.no_grad():
            want, fp = ref(*x).numpy(), model(*x).numpy()
        assert np.abs(out - want).max() <= 1e-5
        assert np.abs(fp - want).max() > 1e-4  # the rounding is visible


class _Words(nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.word_embeddings = nn.Embedding.from_pretrained(weight)

    def forward(self, idx):
        return self.word_embeddings(idx)


def _ort_rows(weight, mode, idx, path):
    module = _Words(weight).eval()
    with embedding_export_mode(module, mode) as tables:
        torch.onnx.export(module, (idx, ), path, dynamo=False,
                          opset_version=17, input_names=['idx'],
                          do_constant_folding=False)
    sess = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    return tables, sess.run(None, {'idx': idx.numpy()})[0]


@pytest.mark.parametrize('mode,bits,c,block', [
    ('int8', 8, 384, 384), ('int4', 4, 384, 128), ('int4', 4, 512, 128),
    ('int4', 4, 48, 16), ('int4', 8, 24, 24)])
def test_gathered_rows_equal_rounded_table(mode, bits, c, block, tmp_path):
    """Row level: the exported look-up gives the reference rows (int8:
    bit for bit; 4-bit: GatherBlockQuantized subtracts the zero point in
    float, within one float32 rounding). The int4 block is the largest
    power of two in [16, 128] dividing C; C = 24 has none and falls back
    to int8 per row."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(300, c, generator=g) * torch.rand(300, 1,
                                                           generator=g)
    weight[5] = 0.0  # an all-zero row
    idx = torch.tensor([[0, 5, 299, 17], [5, 5, 1, 250]])
    tables, out = _ort_rows(weight, mode, idx, str(tmp_path / 'e.onnx'))
    assert tables == {'word_embeddings': 'int8' if bits == 8 else
                      f'int4 (block {block})'}
    want = rounded(weight, bits, block)[idx].numpy()
    tol = 0.0 if bits == 8 else 2 * EPS * np.abs(want).max()
    assert np.abs(out - want).max() <= tol
    assert (out[0, 1] == 0).all()


# ------------------------------------------------------------- options
def test_auto_is_int4_only_for_4bit_weights(cfg, quantized):
    assert resolve_embedding(quantized[8][1]) == 'int8'
    assert resolve_embedding(quantized[4][1]) == 'int4'
    assert resolve_embedding(quantized[4][1], int4=False) == 'int8'
    assert resolve_embedding(quantized[4][1], 'float') == 'float'
    with pytest.raises(ValueError, match=r"'int9'.*\['auto', 'float'"):
        resolve_embedding(quantized[8][1], 'int9')


def test_non_finite_table_is_named_and_model_untouched(cfg):
    model = _build(cfg)
    inputs = synthetic_inputs(cfg, 1)[0]
    with torch.no_grad():
        before = model(*inputs)
    table = word_embedding_tables(model)[TABLE]
    original = float(table.weight[7, 3])
    with torch.no_grad():
        table.weight[7, 3] = float('nan')
    with pytest.raises(ValueError, match=rf'{TABLE}.*row 7'):
        with embedding_export_mode(model, 'int8'):
            pass
    with torch.no_grad():
        table.weight[7, 3] = original
    assert 'forward' not in table.__dict__
    assert '_export_codes' not in table._buffers
    with embedding_export_mode(model, 'int8'):
        assert '_export_codes' in table._buffers
    assert 'forward' not in table.__dict__ and not any(
        k.startswith('_export') for k in table._buffers)
    with torch.no_grad():
        assert torch.equal(model(*inputs), before)
