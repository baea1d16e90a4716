"""Model-level quantization: planning, calibration, search, errors."""
import copy

import pytest
import torch
import torch.nn as nn

from ris_plugins.quantization import (QuantLinear, calibrate,
                                      load_quant_params, quant_state_dict,
                                      quantize_model, restore_model,
                                      search_layer)
from ris_plugins.quantization.quantizers import UniformQuantizer

from ..conftest import A_QSCHEME as A
from ..conftest import M_QSCHEME as M
from ..conftest import W_QSCHEME as W
from ..conftest import batch, calibrate_on, qcfg, run, tiny_lavt, tiny_model


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [type(m) for m in model.modules()])


def test_16_bit_fake_quant_matches_fp_and_restore_is_exact():
    model, data = tiny_lavt(), batch()
    fp_out = run(model, data)
    before = snapshot(model)
    # PWAM ends in an InstanceNorm over the near-constant features of a
    # random tiny model, which amplifies any input change ~100x: its layers
    # are checked in the baseline model below, which has no such norm.
    state = quantize_model(model, qcfg(16, rules=qcfg()['rules'] + [
        dict(pattern=r'backbone\.pwams\..*', skip=True)]))
    kinds = {type(m).__name__ for m in state.layers.values()}
    assert {'QuantLinear', 'QuantConv2d', 'QuantMatMul'} <= kinds
    # Swin (8 WindowMSA) and BERT products are exposed
    assert sum(n.endswith('matmul2') for n in state.layers) == 8 + 1
    calibrate_on(model, state, data)
    q_out = run(model, data)
    assert not torch.equal(q_out, fp_out)  # the quantizers are live
    torch.testing.assert_close(q_out, fp_out, atol=2e-4, rtol=1e-3)
    restore_model(model, state)
    after = snapshot(model)
    assert before[1] == after[1]
    assert before[0].keys() == after[0].keys()
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert torch.equal(run(model, data), fp_out)


def test_16_bit_whole_baseline_model_matches_fp():
    model, data = tiny_model().eval(), batch()
    fp_out = run(model, data)
    state = quantize_model(model, qcfg(16, rules=[]))
    assert len(state.layers) > 50 and not state.skipped
    calibrate_on(model, state, data)
    q_out = run(model, data)
    assert not torch.equal(q_out, fp_out)
    torch.testing.assert_close(q_out, fp_out, atol=1e-5, rtol=1e-3)


def test_4_bit_error_is_larger_than_8_bit():
    errs = {}
    for bits in (8, 4):
        model, data = tiny_lavt(), batch()
        fp_out = run(model, data)
        state = quantize_model(model, qcfg(bits))
        calibrate_on(model, state, data)
        errs[bits] = (run(model, data) - fp_out).abs().mean().item()
    assert 0 < errs[8] < errs[4]


def test_rules_skip_override_bits_and_keep_input_fp():
    model = tiny_lavt()
    cfg = qcfg(4, rules=[
        dict(pattern=r'backbone\.patch_embed\.projection', a_qscheme=None,
             w_bits=8),
        dict(pattern=r'decode_head\..*', types=['Conv'], skip=True)])
    state = quantize_model(model, cfg)
    pe = state.layers['backbone.patch_embed.projection']
    assert pe.a_quantizer is None and pe.w_quantizer.bits == 8
    assert not any(n.startswith('decode_head.') and 'Conv' in type(m).__name__
                   for n, m in state.layers.items())
    assert any(n.startswith('decode_head.') for n in state.skipped)
    other = state.layers['backbone.stages.0.blocks.0.attn.w_msa.qkv']
    assert other.w_quantizer.bits == 4 and other.a_quantizer.bits == 4


@pytest.mark.parametrize('cfg, match', [
    (dict(w_bits=1), r'w_bits must be an int in \[2, 16\], got 1'),
    (dict(a_bits=17), r'a_bits must be an int in \[2, 16\], got 17'),
    (dict(global_qconfig=dict(w_qscheme=dict(type='NoSuchQuantizer'),
                              a_qscheme=A, m_qscheme=M)),
     r"unknown quantizer type 'NoSuchQuantizer'; valid types: .*"
     r"UniformQuantizer"),
    (dict(rules=[dict(pattern=r'backbone\.nothing\..*', skip=True)]),
     r"pattern 'backbone\\\\.nothing\\\\..\*' .* matches no quantizable "
     r'layer'),
    (dict(rules=[dict(patern='x')]), r"unknown keys \['patern'\]"),
    (dict(rules=[dict(pattern=r'backbone\.(stages', skip=True)]),
     r"quant_cfg.rules\[0\].pattern 'backbone\\\\.\(stages' is not a "
     r'valid regular expression: missing \), unterminated subpattern'),
    (dict(global_qconfig=dict(w_qscheme=dict(W, observer='median'),
                              a_qscheme=A, m_qscheme=M)), 'median'),
])
def test_bad_config_leaves_fp_model_untouched(cfg, match):
    model, data = tiny_lavt(), batch()
    fp_out, before = run(model, data), snapshot(model)
    with pytest.raises(ValueError, match=match):
        quantize_model(model, qcfg(8, **cfg))
    assert snapshot(model)[1] == before[1]
    assert torch.equal(run(model, data), fp_out)


def test_nan_activation_is_reported_with_the_layer_name():
    model, data = tiny_lavt(), batch()
    state = quantize_model(model, qcfg(8))
    imgs = data[0].clone()
    imgs[0, 0, 0, 0] = float('nan')
    with pytest.raises(FloatingPointError, match=r'NaN or Inf in the input '
                       r"of 'backbone\.patch_embed\.projection'"):
        calibrate_on(model, state, (imgs, data[1]))


def test_saved_parameters_reload_to_identical_outputs_and_mismatch_errors():
    model, data = tiny_lavt(), batch()
    state = quantize_model(model, qcfg(4))
    calibrate_on(model, state, data, search=dict(rounds=1, rows=64))
    params = quant_state_dict(state)
    out = run(model, data)

    fresh = tiny_lavt()
    keys = fresh.state_dict().keys()
    fresh.load_state_dict(copy.deepcopy(
        {k: v for k, v in model.state_dict().items() if k in keys}))
    fresh_state = quantize_model(fresh, qcfg(4))
    load_quant_params(fresh_state, params)
    assert torch.equal(run(fresh, data), out)

    other = quantize_model(tiny_lavt(), qcfg(4, rules=qcfg()['rules'] + [
        dict(pattern=r'decode_head\..*', skip=True)]))
    with pytest.raises(ValueError, match=r'do not match the quantized model: '
                       r'missing \[\] \(0\), unexpected \[.decode_head'):
        load_quant_params(other, params, 'params')


def brute_force_choice(layer, x, child):
    """Independent reference: set each candidate, run the layer's own
    forward, keep the lowest output error per output channel / tensor."""
    q = getattr(layer, child)
    ref = nn.functional.linear(x, layer.weight, layer.bias)
    errs = []
    for i in range(q.num_candidates()):
        trial = copy.deepcopy(layer)
        tq = getattr(trial, child)
        tq.select(torch.full(tuple(tq.group_shape), i, dtype=torch.long))
        err = (trial(x) - ref).double().square()
        errs.append(err.sum(0) if child == 'w_quantizer' else err.sum())
    return torch.stack(errs).argmin(0)


def test_search_matches_brute_force_per_candidate_forward():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8))
    model[0].weight.data[0] *= 6  # channels with different ranges
    x = torch.randn(200, 16) * torch.linspace(0.1, 3, 16)
    state = quantize_model(model, dict(
        w_bits=4, a_bits=4, global_qconfig=dict(w_qscheme=W, a_qscheme=A)))
    layer = state.layers['0']
    assert isinstance(layer, QuantLinear)
    calibrate(state, lambda i: model(x), [0])
    inits = {c: q.state_dict() for c, q in layer.quantizers().items()}
    search_layer(layer, 'Linear', [x], rounds=1, chunk_elems=1000)
    got_w = layer.w_quantizer.state_dict()
    # reference for the weights: activation quantizer at its initial state
    layer.w_quantizer.load_state_dict(inits['w_quantizer'])
    layer.a_quantizer.load_state_dict(inits['a_quantizer'])
    want_w = brute_force_choice(layer, x, 'w_quantizer')
    layer.w_quantizer.select(want_w)
    assert all(torch.equal(v, got_w[k])
               for k, v in layer.w_quantizer.state_dict().items())
    assert len(set(want_w.tolist())) > 1  # per-channel choices differ
    want_a = brute_force_choice(layer, x, 'a_quantizer')
    layer.a_quantizer.select(want_a)
    search_a = copy.deepcopy(layer)
    search_a.a_quantizer.load_state_dict(inits['a_quantizer'])
    assert want_a.dim() == 0


def test_unquantizable_modules_are_reported():
    model = nn.Sequential(nn.Linear(4, 4), nn.ConvTranspose2d(4, 4, 2),
                          nn.LayerNorm(4))
    state = quantize_model(model, dict(
        w_bits=8, a_bits=8, global_qconfig=dict(w_qscheme=W, a_qscheme=A)))
    assert list(state.layers) == ['0']
    assert state.unsupported == [('1', 'ConvTranspose2d')]
    assert isinstance(UniformQuantizer(bits=8), nn.Module)
