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
    levels = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4)]
    outs, passed = fusion(levels, text)
    assert passed is text
    assert [tuple(o.shape) for o in outs] == [(2, 6, 8, 8), (2, 6, 4, 4)]
    # Values: with the last word padded, changing its features changes
    # nothing; changing a real word changes every level.
    pad = torch.tensor([[False, False, True]] * 2)
    masked = TextFeatures(text.word_feats, text.sent_feat, pad)
    padded, real = text.word_feats.clone(), text.word_feats.clone()
    padded[:, 2] += 10.0
    real[:, 0] += 1.0
    fusion.eval()
    with torch.no_grad():
        ref, _ = fusion(levels, masked)
        same, _ = fusion(levels, TextFeatures(padded, text.sent_feat, pad))
        other, _ = fusion(levels, TextFeatures(real, text.sent_feat, pad))
    for r, s, o in zip(ref, same, other):
        torch.testing.assert_close(s, r)
        assert (o - r).abs().max() > 1e-4
    c = coord_features(torch.zeros(1, 1, 2, 3))
    assert c[0, 0].tolist() == [[-1, 0, 1]] * 2
    assert c[0, 1].tolist() == [[-1] * 3, [1] * 3]
    with pytest.raises(ValueError, match='levels'):
        fusion([torch.randn(2, 4, 8, 8)], text)
