"""CRISFPN (CRIS's text-gated feature pyramid)."""
import pytest
import torch

from ris_plugins.models.fusion import CRISFPN

from ...conftest import cris_text, randomize_bn


def test_cris_fpn_shapes_and_text_gate():
    fpn = CRISFPN(in_channels=(16, 24, 32), out_channels=(8, 12, 20),
                  text_channels=48).eval()
    randomize_bn(fpn)
    vis = [torch.randn(2, 16, 16, 16), torch.randn(2, 24, 8, 8),
           torch.randn(2, 32, 4, 4)]
    text = cris_text()
    with torch.no_grad():
        (out, ), passed = fpn(vis, text)
        (other, ), _ = fpn(vis, cris_text(seed=1))
        # Sizes that do not divide by 2 (e.g. 200 px: 25 / 12 / 6).
        (odd, ), _ = fpn([torch.randn(2, 16, 25, 25),
                          torch.randn(2, 24, 12, 12),
                          torch.randn(2, 32, 6, 6)], text)
    assert out.shape == (2, 12, 8, 8) and odd.shape == (2, 12, 12, 12)
    assert passed is text
    assert not torch.allclose(out, other)  # the sentence gates f5
    with pytest.raises(ValueError, match='3 visual levels'):
        fpn(vis[:2], text)
    with pytest.raises(ValueError, match='text_channels'):
        fpn(vis, cris_text(c_sent=7))
    with pytest.raises(ValueError, match='3 in_channels'):
        CRISFPN(in_channels=(1, 2), out_channels=(1, 2, 3))
