"""VLTransformerDecoder (CRIS's vision-language decoder)."""
import pytest
import torch

from ris_plugins.models import VLTransformerDecoder

from ...conftest import cris_text


def test_vl_decoder_masks_padding_words():
    dec = VLTransformerDecoder(num_layers=2, dim=32, num_heads=2,
                               ffn_dim=64).eval()
    vis = torch.randn(2, 32, 4, 5)
    text = cris_text()
    words = text.word_feats.clone()
    words[:, 6] += 10.0  # a padding position (pad_mask[:, 5:])
    real = text.word_feats.clone()
    real[:, 1] += 10.0  # a real word
    with torch.no_grad():
        out = dec(vis, text.word_feats, text.pad_mask)
        torch.testing.assert_close(dec(vis, words, text.pad_mask), out)
        assert not torch.allclose(dec(vis, real, text.pad_mask), out)
    assert out.shape == (2, 32, 4, 5)
    with pytest.raises(ValueError, match='word width'):
        dec(vis, torch.randn(2, 8, 16), text.pad_mask)
