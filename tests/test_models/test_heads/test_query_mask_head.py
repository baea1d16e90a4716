"""QueryMaskHead (HARIS's query-token mask head)."""
import pytest
import torch

from ris_plugins.models import TextFeatures
from ris_plugins.models.heads.query_mask_head import QueryMaskHead

from ...conftest import text_feats

C_W, C_S, D = 24, 20, 16  # word, sentence, HLA widths


def head(**kw) -> QueryMaskHead:
    torch.manual_seed(0)
    cfg = dict(in_channels=D, channels=8, num_layers=2, num_heads=2,
               ffn_channels=32, decoder_dropout=0.0)
    cfg.update(kw)
    return QueryMaskHead(**cfg).eval()


def test_query_head_shapes_and_product():
    h = head()
    x = torch.randn(2, D, 5, 6)
    text = text_feats()
    text = TextFeatures(torch.randn(2, 5, D), text.sent_feat, text.pad_mask)
    logits = h((x, ), text)
    assert logits.shape == (2, 1, 20, 24)
    # logits = MLP(query output) . upsampled map
    emb = h.mask_mlp(h.decode_query(x, text))  # (B, C)
    up = h.upsample(x)  # (B, C, 4h, 4w)
    ref = (emb[:, :, None, None] * up).sum(1, keepdim=True)
    torch.testing.assert_close(logits, ref)
    # Padded words are masked keys: the query token ignores them.
    words = text.word_feats.clone()
    words[0, -2:] = 50.0
    moved = h((x, ), TextFeatures(words, text.sent_feat, text.pad_mask))
    torch.testing.assert_close(logits, moved)
    replaced = head(decoder_replaced=True)
    assert not hasattr(replaced, 'layers')
    assert replaced((x, ), text).shape == (2, 1, 20, 24)


def test_query_head_errors():
    with pytest.raises(ValueError, match='multiple of 4'):
        head(in_channels=18)
    with pytest.raises(ValueError, match='out_channels'):
        head(out_channels=2)
    with pytest.raises(ValueError, match='loss_at'):
        head(loss_at='pixels')
    text = text_feats()  # words 24 wide, head query width 16
    with pytest.raises(ValueError, match='query width'):
        head()((torch.randn(2, D, 4, 4), ), text)
