"""SNF and ShortcutFlow (BarLeRIa's shortcut normalizing flows)."""
import math

import pytest
import torch
import torch.nn as nn

from ris_plugins.models import SNF, ShortcutFlow

from ...conftest import n_params


def test_planar_flow_by_hand():
    flow = ShortcutFlow(3, flow_length=1)
    step = flow.steps[0]
    with torch.no_grad():
        flow.mu.copy_(torch.tensor([0.5, 0., -1.]))
        flow.log_sigma.copy_(torch.tensor([0., math.log(2.), 0.]))
        step.u.copy_(torch.tensor([1., 2., 3.]))
        step.w.copy_(torch.tensor([0.5, -1., 0.25]))
        step.b.fill_(0.1)
    z = torch.tensor([[2., 1., 4.]])
    z0 = [0.5 + 2., 2. * 1., -1. + 4.]  # affine: (2.5, 2, 3)
    a = math.tanh(0.5 * 2.5 - 1. * 2. + 0.25 * 3. + 0.1)  # tanh(0.1)
    want = torch.tensor([[z0[0] + a, z0[1] + 2 * a, z0[2] + 3 * a]])
    torch.testing.assert_close(flow(z), want)


def test_snf_identity_at_init():
    torch.manual_seed(0)
    flow = ShortcutFlow(64, flow_length=4)
    x = torch.randn(3, 10, 64) * 5
    # Near identity: |u| <= 0.01 and |tanh| <= 1, 4 steps.
    assert float((flow(x) - x).abs().max()) <= 4 * 0.01
    assert float((flow(x) - x).abs().max()) > 0
    for step in flow.steps:
        nn.init.zeros_(step.u)
    assert torch.equal(flow(x), x)  # exactly identity with u = 0


def test_snf_parameter_count_and_checks():
    snf = SNF()  # ViT-B/16 768 x 12 + text 512 x 12, K = 4
    assert n_params(snf) == 24 * (2 * 768 + 4 * (2 * 768 + 1)) + 24 * (
        2 * 512 + 4 * (2 * 512 + 1))
    assert n_params(snf) == 307_392  # ris_methods.md 4.1
    with pytest.raises(ValueError, match='visual_layers=4 but the visual '
                       'tower has 12 blocks'):
        SNF(visual_layers=4).check_towers(12, 768, 12, 512)
    with pytest.raises(ValueError, match='text_dim=512 but the text tower '
                       'is 24 wide'):
        SNF().check_towers(12, 768, 12, 24)
    with pytest.raises(ValueError, match='valid'):
        SNF().shortcuts('audio', 0)
