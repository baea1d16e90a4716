"""Every shipped config parses; model configs build and run one forward."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS

from ..conftest import ROOT
from .test_ref_segmentor import samples

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


def context_length(cfg: Config) -> int:
    """The TokenizeText context length of the val pipeline."""
    return next(t.context_length for t in cfg.val_dataloader.dataset.pipeline
                if t.type == 'TokenizeText')


def _forward(cfg: Config, size: int, length: int) -> torch.Tensor:
    model = MODELS.build(cfg.model).eval()
    ds = samples(1, size=size, ori=(size, size), pad=(0, 0, 0, 0),
                 length=length)
    with torch.no_grad():
        return model(torch.randn(1, 3, size, size), ds, mode='predict')


@pytest.mark.parametrize('path', DEMO, ids=osp.basename)
def test_demo_models_forward(path):
    cfg = Config.fromfile(path)
    length = context_length(cfg)
    out = _forward(cfg, 160, length)
    assert out[0].pred_sem_seg.data.shape == (1, 160, 160)


@pytest.mark.slow
@pytest.mark.parametrize(
    'path', [p for p in FULL if 'refcoco-' in osp.basename(p)],
    ids=osp.basename)
def test_full_size_models_forward(path):
    cfg = Config.fromfile(path)
    size = cfg.model.data_preprocessor.size[0]
    length = context_length(cfg)
    out = _forward(cfg, size, length)
    assert out[0].seg_logits.data.shape[-2:] == (size, size)
