"""Mixed precision from sensitivity: ``ptq.quant_cfg.budget``
(``ris_plugins/quantization/mixed_precision.py``, PTQHook)."""
import glob
import os.path as osp
import random
from fractions import Fraction

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner import Runner

from ris_plugins.quantization import (assign_bits, assigned_quant_cfg,
                                      calibrate_on_dataset,
                                      calibrate_with_budget,
                                      load_quant_params, quant_bits,
                                      quant_state_dict, quantize_model,
                                      read_quant_params, resolved_quant_cfg)
from ris_plugins.quantization.settings import check_ptq_cfg

from ..conftest import ROOT, batch, run, tiny_cfg

QUANT = osp.join(ROOT, 'configs', '_base_', 'quantization')
W = dict(type='UniformQuantizer', granularity='channel')
A = dict(type='UniformQuantizer', symmetric=False)
QCFG = dict(w_bits=4, a_bits=4,
            global_qconfig=dict(w_qscheme=W, a_qscheme=A, m_qscheme=A))


class Branches(nn.Module):
    """Hand-built: ``y = a(x) + b(x) + c(x) + d(x)``, four 16x16 Linears
    (256 weights each), ``b``'s weights 50x larger so that its
    quantization error dominates the output: ``b`` is the most sensitive
    layer by far.  Plain-tensor forward ``model(x=..., mode='tensor')``
    and an identity data preprocessor, as ``calibrate_on_dataset``
    calls a RIS model."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        for name in 'abcd':
            setattr(self, name, nn.Linear(16, 16))
        with torch.no_grad():
            self.b.weight.mul_(50)

    @staticmethod
    def data_preprocessor(data: dict, training: bool) -> dict:
        return dict(x=torch.stack(data['x']))

    def forward(self, x, mode='tensor'):
        return self.a(x) + self.b(x) + self.c(x) + self.d(x)


DATASET = [dict(x=torch.randn(8, 16, generator=torch.Generator()
                              .manual_seed(i))) for i in range(6)]


def mixed(budget, search=None):
    model = Branches()
    state, done, _ = calibrate_with_budget(
        model, dict(QCFG, budget=budget), DATASET, steps=4, search=search)
    return model, state, done


# -------------------------------------------------------- the assignment
def test_most_sensitive_layer_is_kept_at_8_bits():
    # one layer's extra 4 bits x 256 weights: 5.0 bits per weight on average
    for budget in (dict(avg_w_bits=5.0), dict(size_ratio=1.25),
                   dict(avg_w_bits=5.9)):
        model, state, done = mixed(budget)
        assert done.high_layers == ['b'], budget
        assert {n: q.bits for n, q in state.quantizers()} == {
            'a.w_quantizer': 4, 'a.a_quantizer': 4,
            'b.w_quantizer': 8, 'b.a_quantizer': 8,
            'c.w_quantizer': 4, 'c.a_quantizer': 4,
            'd.w_quantizer': 4, 'd.a_quantizer': 4}
        assert max(done.sensitivity, key=done.sensitivity.get) == 'b'
    assert done.weight_bytes == 3 * 256 * 4 / 8 + 256 * 8 / 8
    assert done.low_bytes == 4 * 256 * 4 / 8 and done.avg_w_bits == 5.0
    assert 'PTQ mixed precision (avg_w_bits=5.9, high_bits=8): 1 of 4 ' \
        "layers at W8A8: ['b']" in done.summary()


def test_w4_budget_is_all_4_bit_and_w8_budget_all_8_bit():
    for budget in (dict(size_ratio=1.0), dict(avg_w_bits=4)):
        _, state, done = mixed(budget)
        assert done.high_layers == []
        assert set(quant_bits(state).values()) == {4}
    for budget in (dict(size_ratio=2.0), dict(avg_w_bits=8.0)):
        _, state, done = mixed(budget)
        assert done.high_layers == ['a', 'b', 'c', 'd']
        assert set(quant_bits(state).values()) == {8}
        assert done.weight_bytes == done.high_bytes == 1024


def _sizes_and_errors(rng: random.Random, n: int):
    sizes = {f'l{i}': (rng.choice([1, 3, 7, 64, 300, 1000]),
                       rng.choice([4, 4, 4, 6])) for i in range(n)}
    errors = {k: rng.random() ** 3 for k in sizes}
    return sizes, errors


def test_assignment_respects_the_budget_exactly_and_fills_it():
    rng = random.Random(0)
    for trial in range(200):
        sizes, errors = _sizes_and_errors(rng, rng.randint(1, 12))
        low = sum(n * b for n, b in sizes.values())
        numel = sum(n for n, _ in sizes.values())
        if rng.random() < 0.5:
            ratio = round(rng.uniform(1.0, 1.5), 2)
            budget, bound = dict(size_ratio=ratio), Fraction(str(ratio)) * low
        else:
            bits = round(rng.uniform(5.0, 8.0), 2)
            budget, bound = dict(avg_w_bits=bits), Fraction(str(bits)) * numel
        if bound < low:
            continue
        done = assign_bits(errors, sizes, budget, w_bits=4)
        used = low + sum(n * (8 - b) for k, (n, b) in sizes.items()
                         if k in done.high_layers)
        assert used <= bound and done.weight_bytes * 8 == used, trial
        # greedy until full: no passed-over layer still fits
        room = bound - used
        assert all(n * (8 - b) > room for k, (n, b) in sizes.items()
                   if k not in done.high_layers), trial
        assert done.high_layers == [k for k in sizes
                                    if k in done.high_layers]  # model order


def test_budget_is_compared_exactly_not_in_floating_point():
    # 4.35 * 20 = 86.99999999999999 in floats; the budget is 87 bits
    sizes = {'small': (7, 4), 'big': (13, 4)}
    done = assign_bits({'small': 1.0, 'big': 1.0}, sizes,
                       dict(avg_w_bits=4.35, high_bits=5), w_bits=4)
    assert done.high_layers == ['small'] and done.weight_bytes * 8 == 87


def test_greedy_is_by_sensitivity_per_byte():
    sizes = {'large': (1000, 4), 'small': (10, 4)}
    # large: more sensitive in total, less per byte
    done = assign_bits({'large': 1.0, 'small': 0.1}, sizes,
                       dict(size_ratio=1.05), w_bits=4)
    assert done.high_layers == ['small']


# ------------------------------------------------------------ bad budgets
def _ptq(**quant):
    ptq = Config.fromfile(osp.join(QUANT, 'minmax.py')).ptq.to_dict()
    ptq['quant_cfg'].update(dict(w_bits=4, a_bits=4), **quant)
    return ptq


@pytest.mark.parametrize('budget, match', [
    (1.3, r'ptq.quant_cfg.budget must be None or a dict with one of '
     r"\('avg_w_bits', 'size_ratio'\)"),
    (dict(size_ration=1.3), r"ptq.quant_cfg.budget: unknown keys "
     r"\['size_ration'\]; valid keys: \('avg_w_bits', 'size_ratio', "
     r"'high_bits'\)"),
    (dict(size_ratio=1.3, avg_w_bits=5), r'must set exactly one of '
     r"\('avg_w_bits', 'size_ratio'\), got \['avg_w_bits', 'size_ratio'\]"),
    (dict(high_bits=8), r'must set exactly one of .*got none'),
    (dict(size_ratio=0.9), r'ptq.quant_cfg.budget.size_ratio must be a '
     r'number in \[1, 2\] \(w_bits=4, high_bits=8\), got 0.9'),
    (dict(size_ratio=2.5), r'size_ratio must be a number in \[1, 2\]'),
    (dict(avg_w_bits=3), r'avg_w_bits must be a number in \[4, 8\]'),
    (dict(avg_w_bits='5'), r"avg_w_bits must be a number .*got '5'"),
    (dict(avg_w_bits=True), r'avg_w_bits must be a number .*got True'),
    (dict(size_ratio=1.2, high_bits=4), r'ptq.quant_cfg.budget.high_bits '
     r'must be an int in \(4, 16\] \(above quant_cfg.w_bits\), got 4'),
    (dict(size_ratio=1.2, high_bits=8.0), r'high_bits must be an int'),
])
def test_bad_budgets_are_named(budget, match):
    with pytest.raises(ValueError, match=match):
        check_ptq_cfg(_ptq(budget=budget))


def test_good_budgets_pass_and_an_unresolved_budget_is_refused():
    assert check_ptq_cfg(_ptq(budget=dict(size_ratio=1.3)))[
        'quant_cfg']['budget'] == dict(size_ratio=1.3)
    check_ptq_cfg(_ptq(budget=dict(avg_w_bits=6, high_bits=6)))
    with pytest.raises(ValueError, match=r'quant_cfg.budget=\{.size_ratio.: '
                       r'1.3\} is resolved from a sensitivity measurement: '
                       r'calibrate with ris_plugins.quantization.'
                       r'calibrate_with_budget'):
        quantize_model(Branches(), dict(QCFG, budget=dict(size_ratio=1.3)))
    with pytest.raises(ValueError, match=r'calibrate_with_budget: '
                       r'quant_cfg.budget is not set'):
        calibrate_with_budget(Branches(), QCFG, DATASET, steps=2)
    with pytest.raises(ValueError, match=r'below the all-low size'):
        # a rule keeps b at 8 bits: 1.0 x pure W4 cannot be met
        assign_bits({}, {'a': (256, 4), 'b': (256, 8)},
                    dict(avg_w_bits=4.0), w_bits=4)


def test_a_failed_calibration_leaves_the_fp_model():
    model = Branches()
    with pytest.raises(ValueError, match=r'fewer than calibrate_steps=99'):
        calibrate_with_budget(model, dict(QCFG, budget=dict(size_ratio=1.25)),
                              DATASET, steps=99)
    assert type(model.b) is nn.Linear and not hasattr(model.b, 'w_quantizer')


def test_parameters_equal_a_full_calibration_of_the_mixed_model():
    """Only the promoted layers are recalibrated; the low layers keep the
    parameters of the low calibration, bit for bit what calibrating the
    whole mixed model gives."""
    search = dict(rounds=1, rows=32)
    model, state, done = mixed(dict(avg_w_bits=6.0), search)
    assert len(done.high_layers) == 2 and 'b' in done.high_layers
    again = Branches()
    full = quantize_model(again, assigned_quant_cfg(QCFG, done.high_layers))
    calibrate_on_dataset(full, again, DATASET, 4, search=search)
    ours, ref = quant_state_dict(state), quant_state_dict(full)
    assert ours.keys() == ref.keys()
    for key in ref:
        assert torch.equal(ours[key], ref[key]), key


# ------------------------------------------------- PTQHook: save and load
def _hook_cfg(root, work, ckpt, budget, **ptq):
    cfg = tiny_cfg(root, work)
    quant = Config.fromfile(osp.join(QUANT, 'minmax.py'))
    cfg.custom_hooks, cfg.ptq = quant.custom_hooks, quant.ptq
    # the fusion and the head only (fewer layers to measure)
    rules = [dict(pattern=r'(backbone|text_encoder)\..*', skip=True),
             dict(pattern=r'.*conv_seg', skip=True)]
    cfg.merge_from_dict(dict(ptq=dict(
        quant_cfg=dict(w_bits=4, a_bits=4, budget=budget, rules=rules),
        calibrate_steps=2, **ptq)))
    cfg.work_dir, cfg.load_from = work, ckpt
    return cfg


@pytest.fixture(scope='module')
def checkpoint(refshapes_root, tmp_path_factory):
    work = str(tmp_path_factory.mktemp('budget_fp'))
    runner = Runner.from_cfg(tiny_cfg(refshapes_root, work))
    path = osp.join(work, 'fp.pth')
    torch.save(dict(state_dict=runner.model.state_dict(), meta={}), path)
    return path


def test_hook_saves_the_assignment_and_load_params_reproduces_it(
        refshapes_root, checkpoint, tmp_path, monkeypatch):
    budget = dict(size_ratio=1.3)
    work = str(tmp_path / 'first')
    first = Runner.from_cfg(_hook_cfg(refshapes_root, work, checkpoint,
                                      budget))
    first.test()
    path = osp.join(work, 'ptq_params.pth')
    payload = read_quant_params(path)
    record = payload['meta']['mixed_precision']
    assert record['budget'] == dict(size_ratio=1.3, high_bits=8)
    assert 0 < len(record['high_layers']) < len(record['sensitivity'])
    assert record['weight_bytes'] <= 1.3 * record['low_bytes']
    high = {f'{n}.{c}' for n in record['high_layers']
            for c in ('w_quantizer', 'a_quantizer')}
    assert {k for k, b in payload['bits'].items() if b == 8} == high
    log = open(glob.glob(osp.join(work, '*', '*.log'))[0]).read()
    assert f"layers at W8A8: {record['high_layers']}" in log
    assert 'quantized weights' in log and 'float part' in log

    # reload: no calibration and no sensitivity measurement
    import ris_plugins.engine.hooks.ptq_hook as hook_mod

    def refuse(*args, **kwargs):
        raise AssertionError('measured or calibrated again')
    monkeypatch.setattr(hook_mod, 'calibrate_with_budget', refuse)
    monkeypatch.setattr(hook_mod, 'calibrate_on_dataset', refuse)
    for ptq in (dict(load_params=path), dict()):  # explicit, then cache
        again = Runner.from_cfg(_hook_cfg(
            refshapes_root, work if not ptq else str(tmp_path / 'again'),
            checkpoint, budget, **ptq))
        again.test()
        state = next(h for h in again.hooks
                     if type(h).__name__ == 'PTQHook').state
        assert quant_bits(state) == payload['bits']
        data = batch()
        assert torch.allclose(run(again.model, data), run(first.model, data),
                              rtol=1e-5, atol=1e-6)

    # the file's meta alone rebuilds the mixed model (pytorch2onnx does)
    fresh = Runner.from_cfg(tiny_cfg(refshapes_root, str(tmp_path / 'fp')))
    fresh.load_checkpoint(checkpoint)
    state = quantize_model(fresh.model.eval(),
                           resolved_quant_cfg(payload['meta'], path))
    load_quant_params(state, payload['state_dict'], path, payload['bits'])
    assert torch.allclose(run(fresh.model, batch()), run(first.model, batch()),
                          rtol=1e-5, atol=1e-6)  # float round-off only


def test_load_params_with_another_or_no_budget_is_named(
        refshapes_root, checkpoint, tmp_path):
    work = str(tmp_path / 'w')
    Runner.from_cfg(_hook_cfg(refshapes_root, work, checkpoint,
                              dict(size_ratio=1.3))).test()
    path = osp.join(work, 'ptq_params.pth')
    other = Runner.from_cfg(_hook_cfg(
        refshapes_root, str(tmp_path / 'o'), checkpoint,
        dict(size_ratio=1.5), load_params=path))
    with pytest.raises(ValueError, match=(
            rf'{path} was calibrated with quant_cfg.budget.size_ratio = 1.3 '
            r'but the model is quantized with 1.5')):
        other.test()
    assert not any('Quant' in type(m).__name__
                   for m in other.model.modules())
    none = Runner.from_cfg(_hook_cfg(refshapes_root, str(tmp_path / 'n'),
                                     checkpoint, None, load_params=path))
    with pytest.raises(ValueError, match=(
            rf'{path} holds mixed-precision parameters \(budget '
            r"\{'size_ratio': 1.3, 'high_bits': 8\}\) but "
            r'ptq.quant_cfg.budget is not set')):
        none.test()
    assert not any('Quant' in type(m).__name__
                   for m in none.model.modules())
