"""Every shipped config parses; model configs build and run one forward."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS

from ..conftest import ROOT, run_samples, samples

CONFIGS = sorted(
    p for p in glob.glob(osp.join(ROOT, 'configs', '*', '*.py')) +
    glob.glob(osp.join(ROOT, 'projects', '*', 'configs', '*.py'))
    if '/_base_/' not in p)
DEMO = [c for c in CONFIGS if '/demo/' in c]
FULL = [c for c in CONFIGS if '/demo/' not in c]


@pytest.mark.parametrize('path', CONFIGS, ids=osp.basename)
def test_config_parses(path):
    cfg = Config.fromfile(path)
    assert cfg.model.type == 'RefSegmentor'
    assert cfg.custom_imports.imports == ['ris_plugins']
    assert cfg.default_scope == 'mmseg'


def tokenize(cfg: Config, text: str = 'the red circle on the left'):
    """Tokens (L,) and mask (L,) from the config's own TokenizeText."""
    from mmseg.registry import TRANSFORMS
    step = next(t for t in cfg.val_dataloader.dataset.pipeline
                if t.type == 'TokenizeText')
    out = TRANSFORMS.build(step)(dict(text=text))
    return torch.as_tensor(out['text_tokens']), torch.as_tensor(
        out['text_mask'])


def _forward(cfg: Config, size: int) -> list:
    model = MODELS.build(cfg.model).eval()
    ds = samples(1, size=size, ori=(size, size), pad=(0, 0, 0, 0))
    tokens, mask = tokenize(cfg)
    ds[0].set_metainfo(dict(text_tokens=tokens, text_mask=mask))
    with torch.no_grad():
        return run_samples(model, torch.randn(1, 3, size, size), ds,
                           mode='predict')


@pytest.mark.parametrize('path', DEMO, ids=osp.basename)
def test_demo_models_forward(path):
    cfg = Config.fromfile(path)
    out = _forward(cfg, 160)
    assert out[0].pred_sem_seg.data.shape == (1, 160, 160)


@pytest.mark.slow
@pytest.mark.parametrize(
    'path', [p for p in FULL if 'refcoco-' in osp.basename(p)
             and 'ptq4ris' not in p],  # PTQ configs: the same FP models
    ids=osp.basename)
def test_full_size_models_forward(path):
    cfg = Config.fromfile(path)
    size = cfg.model.data_preprocessor.size[0]
    out = _forward(cfg, size)
    assert out[0].seg_logits.data.shape[-2:] == (size, size)
