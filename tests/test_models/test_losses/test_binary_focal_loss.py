"""BinaryFocalLoss against a hand computation."""
import pytest
import torch

from ris_plugins.models.losses import BinaryFocalLoss


def test_binary_focal_loss_by_hand():
    loss = BinaryFocalLoss(alpha=0.25, gamma=2.0)
    pred = torch.tensor([0.0, 2.0, -1.0, 3.0]).view(1, 1, 2, 2)
    label = torch.tensor([1, 0, 0, 255]).view(1, 2, 2)
    p = torch.sigmoid(torch.tensor([0.0, 2.0, -1.0]))
    terms = [  # -alpha_t (1 - p_t)^2 log p_t
        -0.25 * (1 - p[0])**2 * torch.log(p[0]),
        -0.75 * p[1]**2 * torch.log(1 - p[1]),
        -0.75 * p[2]**2 * torch.log(1 - p[2]),
    ]
    torch.testing.assert_close(loss(pred, label), sum(terms) / 3)
    torch.testing.assert_close(
        BinaryFocalLoss(loss_weight=20.0)(pred, label[:, None]),
        20 * sum(terms) / 3)
    with pytest.raises(ValueError, match='logits'):
        loss(torch.zeros(1, 2, 2, 2), label)
