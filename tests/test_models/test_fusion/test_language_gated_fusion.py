"""LanguageGatedFusion (the baseline fusion) and coord_features."""
import pytest
import torch

from ris_plugins.models import (LanguageGatedFusion, TextFeatures,
                                coord_features)


def test_fusion_shapes_and_coords():
    fusion = LanguageGatedFusion(in_channels=[4, 8], channels=6,
                                 text_channels=5)
    text = TextFeatures(torch.randn(2, 3, 5), torch.randn(2, 5),
                        torch.zeros(2, 3, dtype=torch.bool))
    outs, passed = fusion([torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)],
                          text)
    assert passed is text
    assert [tuple(o.shape) for o in outs] == [(2, 6, 8, 8), (2, 6, 4, 4)]
    c = coord_features(torch.zeros(1, 1, 2, 3))
    assert c[0, 0].tolist() == [[-1, 0, 1]] * 2
    assert c[0, 1].tolist() == [[-1] * 3, [1] * 3]
    with pytest.raises(ValueError, match='levels'):
        fusion([torch.randn(2, 4, 8, 8)], text)
