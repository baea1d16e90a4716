"""BottleneckAdapter."""
import pytest
import torch

from mmseg.registry import MODELS
from ris_plugins.models.adapters.bottleneck import BottleneckAdapter


def test_bottleneck_identity_at_init_and_grads():
    ada = MODELS.build(
        dict(type='BottleneckAdapter', dim=6, hidden=3, scale=0.5))
    x = torch.randn(2, 4, 6)
    torch.testing.assert_close(ada(x), x)
    assert sum(p.numel() for p in ada.parameters()) == 2 * 6 * 3 + 3 + 6
    ada(x).square().sum().backward()
    assert ada.up.weight.grad.abs().sum() > 0  # up learns first
    assert ada.down.weight.grad.abs().sum() == 0  # blocked by up = 0


def test_bottleneck_hand_values():
    ada = BottleneckAdapter(dim=2, hidden=1, scale=0.5)
    with torch.no_grad():
        ada.down.weight.copy_(torch.tensor([[1., 1.]]))
        ada.down.bias.zero_()
        ada.up.weight.copy_(torch.tensor([[1.], [2.]]))
    # h = relu(1 + 2) = 3; y = x + .5 * (3, 6).
    torch.testing.assert_close(
        ada(torch.tensor([1., 2.])), torch.tensor([2.5, 5.]))
    with pytest.raises(ValueError, match='last dimension 3'):
        ada(torch.zeros(3))
