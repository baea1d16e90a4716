"""HARIS configs: full-size trainable parameters."""
import os.path as osp

import torch
from mmengine.config import Config

from mmseg.registry import MODELS

from ..conftest import ROOT

HARIS_CFG = osp.join(ROOT, 'configs', 'haris',
                     'haris_sam-vit-b_1xb16-50e_refcoco-480x480.py')


def test_full_size_haris_trainable_parameters():
    """Full HARIS (SAM ViT-B + CLIP ViT-B/16 text, D 256, 3 decoder
    layers), built on the meta device: only fusion + head train. Per
    HLA block: v_proj 768*256+256, w_proj 512*256+256, Wq/Wk/Wv/Wo/Wv'/Wo'
    6*(256^2+256), two LNs 4*256, s_proj 512*256+256, feedback MLP
    256*64+64 + 64*256+256 = 888,384; each injection conv 3x3 256->768 (no
    bias) + BN = 1,771,008."""
    cfg = Config.fromfile(HARIS_CFG)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    block = (768 * 256 + 256) + (512 * 256 + 256) + 6 * (256**2 + 256) + \
        4 * 256 + (512 * 256 + 256) + (256 * 64 + 64 + 64 * 256 + 256)
    inject = 256 * 768 * 9 + 2 * 768
    fusion = sum(p.numel() for p in model.fusion.parameters())
    assert fusion == 3 * block + 2 * inject == 6_207_168
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == fusion + sum(
        p.numel() for p in model.decode_head.parameters()) == 9_700_352
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(p.requires_grad for p in model.text_encoder.parameters())
