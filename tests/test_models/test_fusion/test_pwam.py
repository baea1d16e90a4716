"""PWAM (LAVT's pixel-word attention module)."""
import pytest
import torch

from ris_plugins.models import (PWAM, TextFeatures)

from ...conftest import text


def test_pwam_shapes_gate_and_padding():
    pwam = PWAM(8, text_channels=32, num_heads=2).eval()
    x = torch.randn(2, 12, 8)
    t = text()
    fused, gated = pwam(x, t)
    assert fused.shape == gated.shape == (2, 12, 8)
    torch.testing.assert_close(
        gated, x + pwam.res_gate(fused) * fused)
    # padded words must not matter
    t2 = TextFeatures(t.word_feats.clone(), t.sent_feat, t.pad_mask)
    t2.word_feats[:, -2:] = 100.0
    torch.testing.assert_close(pwam(x, t2)[0], fused)
    with pytest.raises(ValueError, match='divisible'):
        PWAM(10, num_heads=3)
