"""Per-layer sensitivity (``ris_plugins/quantization/sensitivity.py``)."""
import pytest
import torch
import torch.nn as nn

from ris_plugins.quantization import (calibrate, layer_errors,
                                      quantize_model)

W = dict(type='UniformQuantizer', granularity='channel')
A = dict(type='UniformQuantizer', symmetric=False)
QCFG = dict(w_bits=4, a_bits=4,
            global_qconfig=dict(w_qscheme=W, a_qscheme=A, m_qscheme=A))


class Branches(nn.Module):
    """``y = a(x) + b(x) + c(x)`` with ``b``'s weights ``gain`` times
    larger: its quantization error dominates the output error."""

    def __init__(self, gain: float = 50.0, width: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(width, width)
        self.b = nn.Linear(width, width)
        self.c = nn.Linear(width, width)
        with torch.no_grad():
            self.b.weight.mul_(gain)

    def forward(self, x):
        return self.a(x) + self.b(x) + self.c(x)


def calibrated(model, quant_cfg=QCFG, n=4):
    xs = [torch.randn(8, 16, generator=torch.Generator().manual_seed(i))
          for i in range(n)]
    state = quantize_model(model, quant_cfg)
    calibrate(state, lambda i: model(xs[i]), range(n))
    return state, torch.cat(xs)


def test_sensitive_layer_ranks_first_with_the_true_error():
    model = Branches()
    state, x = calibrated(model)
    rows = layer_errors(state, lambda: model(x))
    assert [r.name for r in rows][0] == 'b'
    assert rows[0].rel_err > 100 * max(r.rel_err for r in rows[1:]) > 0
    assert rows[0].quantizers == ('w:UniformQuantizer4, '
                                  'a:UniformQuantizer4')
    # recomputed by hand: only b's weight and input quantized
    b = model.b
    with torch.no_grad():
        ref = (nn.functional.linear(x, model.a.weight, model.a.bias)
               + nn.functional.linear(x, b.weight, b.bias)
               + nn.functional.linear(x, model.c.weight, model.c.bias))
        yb = (nn.functional.linear(x, model.a.weight, model.a.bias)
              + nn.functional.linear(b.a_quantizer.quantize(x),
                                     b.w_quantizer.quantize(b.weight),
                                     b.bias)
              + nn.functional.linear(x, model.c.weight, model.c.bias))
    expected = ((yb - ref).square().sum() / ref.square().sum()).item()
    assert rows[0].rel_err == pytest.approx(expected, rel=1e-5)


def test_enabled_flags_are_restored_and_uncalibrated_is_refused():
    model = Branches()
    state, x = calibrated(model)
    model.c.w_quantizer.enabled = False
    layer_errors(state, lambda: model(x))
    flags = {n: q.enabled for n, q in state.quantizers()}
    assert flags.pop('c.w_quantizer') is False and all(flags.values())

    fresh = Branches()
    state = quantize_model(fresh, QCFG)
    with pytest.raises(RuntimeError, match=r'layer_errors: 6 quantizers are '
                       r"not calibrated, e.g. \['a.w_quantizer'"):
        layer_errors(state, lambda: fresh(x))
