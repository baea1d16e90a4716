"""TextFeatureCache and RefSegmentor(text_cache_size=...): a frozen text
encoder's outputs remembered per sentence while training."""
import pytest
import torch
import torch.nn as nn

from ris_plugins.models.utils import TextFeatureCache
from ...conftest import TINY_BERT, samples, text_of, tiny_model

FROZEN_BERT = dict(type='BertTextEncoder', config=TINY_BERT, frozen=True)


class CountingEncoder(nn.Module):
    """Wraps an encoder and records how many sentences each call got."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder, self.calls = encoder, []

    def forward(self, tokens, mask):
        self.calls.append(tokens.shape[0])
        return self.encoder(tokens, mask)


def batch(seed, n=3):
    return text_of(samples(n, seed=seed))


def test_cached_features_equal_the_encoder_and_skip_it():
    model = tiny_model(text_encoder=FROZEN_BERT, text_cache_size=16)
    model.train()
    tokens, mask = batch(0)
    expected = model.text_encoder(tokens, mask)
    spy = CountingEncoder(model.text_encoder)
    model.text_encoder = spy
    first = model.encode_text(tokens, mask)
    second = model.encode_text(tokens, mask)
    assert spy.calls == [1, 1, 1]  # the second batch was never encoded
    for want, a, b in zip(expected, first, second):
        torch.testing.assert_close(a, want, rtol=1e-6, atol=1e-6)
        assert torch.equal(a, b)
    alone = spy.encoder(tokens[1:2], mask[1:2])  # independent of the batch
    assert torch.equal(first.word_feats[1], alone.word_feats[0])
    assert second.pad_mask.dtype == torch.bool
    assert second.word_feats.shape == (3, 8, 32)


def test_only_new_sentences_are_encoded():
    model = tiny_model(text_encoder=FROZEN_BERT, text_cache_size=16)
    model.train()
    old_tokens, old_mask = batch(0)
    new_tokens, new_mask = batch(1, n=1)
    spy = CountingEncoder(model.text_encoder)
    model.text_encoder = spy
    model.encode_text(old_tokens, old_mask)
    mixed = (torch.cat([old_tokens[:2], new_tokens]),
             torch.cat([old_mask[:2], new_mask]))
    out = model.encode_text(*mixed)
    assert spy.calls == [1, 1, 1, 1]  # one sentence at a time
    want = spy.encoder(*mixed)
    torch.testing.assert_close(out.word_feats, want.word_feats,
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.sent_feat, want.sent_feat,
                               rtol=1e-6, atol=1e-6)


def test_least_recently_used_sentence_is_dropped():
    model = tiny_model(text_encoder=FROZEN_BERT)
    cache = TextFeatureCache(max_entries=2)
    tokens, mask = batch(0)
    spy = CountingEncoder(model.text_encoder)
    cache(spy, tokens[:2], mask[:2])   # holds 0, 1
    cache(spy, tokens[:1], mask[:1])   # 0 is now the most recent
    cache(spy, tokens[2:], mask[2:])   # 2 evicts 1
    assert len(cache) == 2
    cache(spy, tokens[:1], mask[:1])   # hit
    cache(spy, tokens[1:2], mask[1:2])  # miss: 1 was dropped
    assert spy.calls == [1, 1, 1, 1]


def test_cache_is_off_in_eval_and_cleared_by_mode_and_loading():
    model = tiny_model(text_encoder=FROZEN_BERT, text_cache_size=16)
    tokens, mask = batch(0)
    model.train()
    model.encode_text(tokens, mask)
    model.train()  # mmengine's IterBasedTrainLoop does this every iteration
    assert len(model.text_cache) == 3
    model.eval()
    assert len(model.text_cache) == 0
    spy = CountingEncoder(model.text_encoder)
    model.text_encoder = spy
    model.encode_text(tokens, mask)
    model.encode_text(tokens, mask)
    assert spy.calls == [3, 3] and len(model.text_cache) == 0
    model.text_encoder = spy.encoder
    model.train()
    model.encode_text(tokens, mask)
    model.load_state_dict(model.state_dict())
    assert len(model.text_cache) == 0


def test_training_with_the_cache_matches_training_without():
    torch.manual_seed(0)
    img = torch.randn(2, 3, 64, 64)
    data = samples(2, ori=(64, 64), pad=(0, 0, 0, 0))
    losses = []
    for size in (0, 8):
        torch.manual_seed(1)
        model = tiny_model(text_encoder=FROZEN_BERT, text_cache_size=size)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        run = []
        for _ in range(3):
            loss = sum(model(img, *text_of(data), data, mode='loss')
                       .values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(loss.item())
        losses.append(run)
    assert losses[0][0] != losses[0][2]  # the model did train
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


def test_a_trainable_or_missing_text_encoder_cannot_be_cached():
    with pytest.raises(ValueError, match=r'frozen text_encoder.*bert\.'):
        tiny_model(text_cache_size=8)  # TINY_BERT trains
    with pytest.raises(ValueError, match='max_entries must be >= 1'):
        TextFeatureCache(0)


def test_cached_features_are_float32_inside_autocast():
    model = tiny_model(text_encoder=FROZEN_BERT, text_cache_size=16)
    model.train()
    tokens, mask = batch(0)
    want = model.text_encoder(tokens, mask)  # float32, outside autocast
    with torch.autocast('cpu', dtype=torch.bfloat16):
        # an encoder run under autocast computes its products in bfloat16
        blurred = model.text_encoder(tokens, mask).word_feats.float()
        got = model.encode_text(tokens, mask)
    assert (blurred - want.word_feats).abs().max() > 1e-5
    assert got.word_feats.dtype == torch.float32
    torch.testing.assert_close(got.word_feats, want.word_feats,
                               rtol=1e-6, atol=1e-6)
