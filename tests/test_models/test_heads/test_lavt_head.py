"""LAVTHead."""
import pytest
import torch

from ris_plugins.models import LAVTHead


def test_lavt_head_shapes():
    head = LAVTHead(in_channels=[16, 32, 64, 128], channels=32,
                    num_classes=2)
    feats = [torch.randn(2, c, s, s) for c, s in ((16, 16), (32, 8),
                                                  (64, 4), (128, 2))]
    assert head(feats).shape == (2, 2, 16, 16)
    with pytest.raises(ValueError, match='4 input widths'):
        LAVTHead(in_channels=[16, 32], channels=8, num_classes=2)
