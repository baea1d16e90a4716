"""Synthetic batches use each config's own tokenizer and input size."""
import pytest
from mmengine.config import Config

from ris_plugins.utils.synthetic import SENTENCE, synthetic_batch, tokenize

from ..conftest import DEMO_CFG

CRIS_CFG = 'configs/cris/cris_r50_8xb8-50e_refcoco-416x416.py'


def test_bert_config_tokens_are_wordpiece_with_cls_and_sep():
    text = tokenize(Config.fromfile(DEMO_CFG))
    tokens, mask = text['text_tokens'], text['text_mask']
    real = tokens[mask.bool()].tolist()
    # bert-base-uncased: [CLS] = 101, [SEP] = 102; 9 words, no word pieces.
    assert real[0] == 101 and real[-1] == 102
    assert len(real) == len(SENTENCE.split()) + 2


def test_clip_config_tokens_end_with_eot():
    text = tokenize(Config.fromfile(CRIS_CFG))
    real = text['text_tokens'][text['text_mask'].bool()].tolist()
    # OpenAI CLIP BPE: <|startoftext|> = 49406, <|endoftext|> = 49407.
    assert real[0] == 49406 and real[-1] == 49407
    assert len(text['text_tokens']) == 17  # CRIS RefCOCO context length


def test_batch_matches_the_config_input_size():
    batch = synthetic_batch(Config.fromfile(CRIS_CFG), batch=3)
    assert len(batch['inputs']) == len(batch['data_samples']) == 3
    assert batch['inputs'][0].shape == (3, 416, 416)
    gt = batch['data_samples'][0].gt_sem_seg.data
    assert gt.shape == (1, 416, 416) and set(gt.unique().tolist()) <= {0, 1}


def test_config_without_size_is_a_clear_error():
    cfg = Config.fromfile(DEMO_CFG)
    cfg.model.data_preprocessor.pop('size', None)
    with pytest.raises(ValueError, match='data_preprocessor.size'):
        synthetic_batch(cfg, batch=1)
