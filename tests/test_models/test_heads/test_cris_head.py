"""CRISHead: dynamic-kernel logits, BCE / Dice losses and full-size parameter
counts."""
import pytest
import torch
import torch.nn.functional as F

from mmseg.registry import MODELS
from ris_plugins.models import CRISHead
from ris_plugins.models.fusion import CRISFPN

from ...conftest import (BCE, cris_text, n_params, randomize_bn, token_samples,
                         tokens)


def tiny_head(**kw):
    cfg = dict(in_channels=32, channels=16, sent_channels=48, num_layers=1,
               num_heads=2, ffn_channels=64, loss_decode=BCE)
    cfg.update(kw)
    return CRISHead(**cfg)


def test_cris_head_logits_and_dynamic_kernel():
    head = tiny_head().eval()
    randomize_bn(head)
    x, text = torch.randn(2, 32, 4, 5), cris_text()
    with torch.no_grad():
        logits = head((x, ), text)
        # Reference: a per-sample conv with the predicted kernel + bias.
        feats = head.projector.vis(head.decoder(x, text.word_feats,
                                                text.pad_mask))
        params = head.projector.txt(text.sent_feat)
        ref = torch.cat([
            F.conv2d(feats[b:b + 1], params[b, :-1].reshape(1, 16, 3, 3),
                     params[b, -1:], padding=1) for b in range(2)
        ])
    assert logits.shape == (2, 1, 16, 20)  # stride 4 of the input map
    torch.testing.assert_close(logits, ref)
    assert head.conv_seg is None and head.threshold == 0.35
    with pytest.raises(ValueError, match='loss_at'):
        tiny_head(loss_at='input')


@pytest.mark.parametrize('loss_at', ['logits', 'label'])
def test_cris_head_bce_loss(loss_at):
    head = tiny_head(loss_at=loss_at).eval()  # no dropout noise
    x, text = torch.randn(2, 32, 4, 4), cris_text()
    # gt 64 x 64, logits 16 x 16
    ds = token_samples(tokens(5, 3), ori=(48, 64), pad=(0, 0, 8, 8))
    losses = head.loss((x, ), ds, {}, text)
    assert set(losses) == {'loss_ce', 'acc_seg'}
    logits = head((x, ), text)
    gt = torch.stack([d.gt_sem_seg.data for d in ds]).float()  # (2,1,64,64)
    if loss_at == 'logits':
        # CRIS: GT nearest-resized 64 -> 16, i.e. rows / columns 0, 4, ...
        expected = F.binary_cross_entropy_with_logits(
            logits, gt[:, :, ::4, ::4])
    else:
        expected = F.binary_cross_entropy_with_logits(
            F.interpolate(logits, size=(64, 64), mode='bilinear',
                          align_corners=False), gt)
    torch.testing.assert_close(losses['loss_ce'], expected)
    assert 0 <= float(losses['acc_seg']) <= 100


@pytest.mark.slow
def test_cris_head_full_size_parameter_counts():
    """ris_methods.md 2.6: FPN + decoder + projector = 42,742,785 (RN50);
    24.14M + 12.63M + 5.97M; RN101 40.51M."""
    fpn = CRISFPN()
    head = CRISHead(loss_decode=BCE)
    assert n_params(fpn) + n_params(head) == 42_742_785
    assert [round(n_params(m) / 1e4) for m in
            (fpn, head.decoder, head.projector)] == [2414, 1263, 597]
    fpn101 = CRISFPN(in_channels=(512, 1024, 512))
    head101 = CRISHead(sent_channels=512, loss_decode=BCE)
    assert round((n_params(fpn101) + n_params(head101)) / 1e4) == 4051


def test_cris_head_dice_scores_the_object_channel():
    """mmseg's DiceLoss one-hot encodes (B, h, w) labels into the single
    channel as background; CRISHead hands it (B, 1, h, w) instead."""
    from mmengine.structures import PixelData

    from mmseg.structures import SegDataSample
    head = MODELS.build(dict(
        type='CRISHead', in_channels=16, channels=8, sent_channels=8,
        num_layers=1, num_heads=2, ffn_channels=16,
        loss_decode=dict(type='DiceLoss', use_sigmoid=True)))
    gt = torch.zeros(1, 8, 8, dtype=torch.long)
    gt[:, :4] = 1
    ds = SegDataSample()
    ds.gt_sem_seg = PixelData(data=gt)
    perfect = torch.where(gt.bool(), 20.0, -20.0)[:, None]  # (1, 1, 8, 8)
    assert head.loss_by_feat(perfect, [ds])['loss_dice'] < 0.01
    assert head.loss_by_feat(-perfect, [ds])['loss_dice'] > 0.99


# -------------------------------------------------- with_cp switch
# (moved from tests/test_models/test_head_checkpointing.py)
def test_cris_head_with_cp_from_config():
    head = MODELS.build(
        dict(type='CRISHead', in_channels=16, channels=8, sent_channels=20,
             text_channels=24, num_layers=2, num_heads=2, ffn_channels=32,
             num_classes=2, out_channels=1, with_cp=True))
    assert head.decoder.with_cp is True
