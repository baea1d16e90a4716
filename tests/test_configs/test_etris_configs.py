"""ETRIS configs: full-size trainable parameters, taps and the head's hand
count."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS

from ..conftest import ROOT, n_params

ETRIS_CFG = osp.join(ROOT, 'configs', 'etris',
                     'etris_vit-b16_8xb4-50e_refcoco-416x416.py')


def test_etris_config_full_size_trainable_parameters():
    """Built on the meta device (no memory, no init): Bridger 598,592 +
    head 22,671,361 + positional embeddings 677 x 768 + 77 x 512."""
    cfg = Config.fromfile(ETRIS_CFG)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    trainable = sum(p.numel() for p in model.parameters()
                    if p.requires_grad)
    assert trainable == 598_592 + 22_671_361 + 677 * 768 + 77 * 512
    assert n_params(model.fusion) + n_params(model.decode_head) == \
        22_671_361
    assert cfg.optim_wrapper.optimizer == dict(type='Adam', lr=1e-4,
                                               weight_decay=0.0)
    assert cfg.train_dataloader.batch_size * 8 == 32
    assert cfg.param_scheduler[0].milestones == [35]
    assert cfg.train_cfg.max_epochs == 50


ETRIS_RN_CFGS = {
    r: osp.join(ROOT, 'configs', 'etris',
                f'etris_{r}_8xb4-50e_refcoco-416x416.py')
    for r in ('r50', 'r101')
}


def head_params(c3: int, c4: int, c5: int, sent: int,
                strides=(2, 1, 2), c: int = 512, ffn: int = 512,
                layers: int = 3, proj: int = 256) -> int:
    """ETRIS HA + GA + projector by hand (ris_methods.md 2.4, 3.4).

    HA: Linear(sent, c); conv k = s (c3), conv k = s (c4), deconv k = s
    (c5) (RN strides 2, 1, 2; ViT 1, 1, 1), each bias-free + BN; 3 one-key
    MHA(c); 1x1 (3c -> c), CoordConv 3x3 (c + 2 -> c), 3x3, each bias-free
    + BN. GA: per layer self- and cross-MHA(c),
    FFN c -> ffn -> LN(ffn) -> c, 5 LayerNorm(c); a final LayerNorm.
    Projector: 3x3 c -> c + BN, 3x3 c -> proj + BN, 1x1 proj -> proj
    (bias), Linear(sent, proj * 9 + 1)."""
    bn, mha = 2 * c, 4 * c * c + 4 * c
    k3, k4, k5 = (s * s for s in strides)
    ha = (sent * c + c) + (c3 * c * k3 + bn) + (c4 * c * k4 + bn) + (
        c5 * c * k5 + bn) + 3 * mha + (3 * c * c + bn) + (
            (c + 2) * c * 9 + bn) + (c * c * 9 + bn)
    ga = layers * (2 * mha + (c * ffn + ffn) + 2 * ffn + (ffn * c + c) +
                   5 * 2 * c) + 2 * c
    projector = (c * c * 9 + bn) + (c * proj * 9 + 2 * proj) + (
        proj * proj + proj) + (sent * (proj * 9 + 1) + proj * 9 + 1)
    return ha + ga + projector


@pytest.mark.slow
@pytest.mark.parametrize('arch,c5,sent,paper', [('r50', 1024, 1024, 26.74),
                                                ('r101', 512, 512, 24.24)])
def test_etris_rn_full_size_parameters_and_taps(arch, c5, sent, paper):
    """Head = hand count (ris_methods.md 3.4 gives 26.74M / 24.24M);
    BridgerRN 1,942,080 (3.3); trainable = Bridger + head + positional
    embeddings (attnpool 50 x 2048, text 77 x 512); taps 512 x 52^2,
    1024 x 26^2, c5 x 13^2 at 416 (shapes on the meta device)."""
    cfg = Config.fromfile(ETRIS_RN_CFGS[arch])
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
        bb = model.backbone
        bb.text._check_tokens = lambda t: None  # no values on meta
        out = bb(torch.zeros(1, 3, 416, 416),
                 torch.zeros(1, 17, dtype=torch.long))
        (fused, ), _ = model.fusion(out.visual, out.text)
    head = n_params(model.fusion) + n_params(model.decode_head)
    assert head == head_params(512, 1024, c5, sent)
    assert round(head / 1e6, 2) == paper
    assert n_params(bb.interactions[0]) == 1_942_080
    trainable = sum(p.numel() for p in model.parameters()
                    if p.requires_grad)
    assert trainable == 1_942_080 + head + 50 * 2048 + 77 * 512
    assert [tuple(v.shape) for v in out.visual] == [
        (1, 512, 52, 52), (1, 1024, 26, 26), (1, c5, 13, 13)]
    assert tuple(out.text.sent_feat.shape) == (1, sent)
    assert tuple(fused.shape) == (1, 512, 26, 26)


def test_head_hand_count_reproduces_the_vit_figure():
    """The same hand count gives ris_methods.md's ViT-B/16 head."""
    assert head_params(768, 768, 512, 512, strides=(1, 1, 1)) == 22_671_361
