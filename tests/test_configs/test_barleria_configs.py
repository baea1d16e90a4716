"""BarLeRIa configs: full-size parameter counts with and without the GST side
network."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmseg.registry import MODELS

from ..conftest import ROOT, n_params

PROJECT = osp.join(ROOT, 'projects', 'barleria', 'configs')


NO_GST_CFG = osp.join(PROJECT,
                      'barleria-no-gst_vit-b16_8xb4-50e_refcoco-416x416.py')


FULL_CFG = osp.join(ROOT, 'configs', 'barleria',
                    'barleria_vit-b16_8xb4-50e_refcoco-416x416.py')


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_barleria_no_gst_full_size_parameters():
    """SNF 307,392 + LIM 41,760 + 41,504 = 390,656 (the paper's 0.39M),
    plus the positional embeddings and ETRIS's head."""
    cfg = Config.fromfile(NO_GST_CFG)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    bb = model.backbone
    adapters = n_params(bb.shortcut_module) + n_params(bb.interactions)
    assert adapters == 307_392 + 41_760 + 41_504 == 390_656
    assert bb.side_net is None
    assert _trainable(model) == 390_656 + 677 * 768 + 77 * 512 + 22_671_361


@pytest.mark.slow
def test_barleria_full_size_parameters():
    """Full BarLeRIa: + the GST side network as released (3,126,848)."""
    cfg = Config.fromfile(FULL_CFG)
    model = MODELS.build(cfg.model)  # CPU: GSTSideNet cannot init on meta
    bb = model.backbone
    assert n_params(bb.side_net) == 3_126_848  # ris_methods.md 4.3
    assert bb.side_taps == (1, 4, 7, 10)
    assert _trainable(model) == (390_656 + 3_126_848 + 677 * 768 +
                                 77 * 512 + 22_671_361)
