"""QueryMaskHead (HARIS's query-token mask head)."""
import pytest
import torch

from ris_plugins.models import TextFeatures
from ris_plugins.models.heads.query_mask_head import QueryMaskHead
from ris_plugins.quantization.attention import convert_attention

from ...conftest import (SDPASpy, assert_close, compare, leaf,
                         padded_mask, text_feats)

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


# ------------------------------------------------- use_sdpa switch
# (moved from tests/test_models/test_sdpa_switches.py)
def query_head(**kwargs) -> QueryMaskHead:
    torch.manual_seed(0)
    head = QueryMaskHead(in_channels=D, channels=8, num_layers=2,
                         num_heads=2, ffn_channels=32, num_classes=2,
                         out_channels=1, **kwargs)
    return head.eval()  # BN running stats and dropout fixed


def query_inputs():
    return leaf(2, D, 4, 5, seed=4), leaf(2, 6, D, seed=5), padded_mask()


def query_forward(head, feat, words, pad_mask):
    text = TextFeatures(words, words.mean(1), pad_mask)
    return [head([feat], text)]


def test_query_head_sdpa_equals_explicit(monkeypatch):
    head = query_head()
    assert head.use_sdpa is False
    # 2 layers x (self-attention + cross-attention)
    compare(head, query_inputs, query_forward, monkeypatch, sdpa_calls=4)


def test_query_head_sdpa_in_training_mode_without_dropout(monkeypatch):
    """Training mode (attention dropout 0, BN batch statistics): the same
    outputs and gradients."""
    head = query_head(decoder_dropout=0.0).train()
    compare(head, query_inputs, query_forward, monkeypatch, sdpa_calls=4)


def test_query_head_sdpa_switch_keeps_ptq_products(monkeypatch):
    """A converted head (PTQ's attention adapters) computes through
    ``matmul1`` / ``matmul2`` with the switch on, with the same logits."""
    head = query_head(use_sdpa=True)
    feat, words, pad_mask = query_inputs()
    with torch.no_grad():
        ref = query_forward(head, feat, words, pad_mask)[0]
    convert_attention(head)
    calls = []
    for name, mod in head.named_modules():
        if name.endswith('matmul1') or name.endswith('matmul2'):
            mod.register_forward_hook(lambda *a: calls.append(1))
    spy = SDPASpy(monkeypatch)
    with torch.no_grad():
        got = query_forward(head, feat, words, pad_mask)[0]
    assert len(calls) == 2 * 4 and spy.calls == 0
    assert_close(ref, got)
