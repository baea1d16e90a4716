"""RefSegmentor with a DualEncoderBackbone (ETRIS, ViT and ResNet): what
trains, the text-encoder rules."""
import pytest
import torch
import torch.nn as nn

from mmseg.registry import MODELS

from ...conftest import (BCE, ETRIS_TINY_TEXT, ETRIS_TINY_VIT,
                         assert_gradient_matches_finite_difference,
                         run_samples, text_of, tiny_etris,
                         tiny_etris_rn, token_samples, tokens)


def test_segmentor_with_dual_encoder_trains_only_adapters_and_head():
    model = tiny_etris().train()
    img = torch.randn(2, 3, 64, 64)
    ds = token_samples(tokens(5, 8))
    losses = run_samples(model, img, ds, mode='loss')
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg'}
    losses['decode.loss_ce'].backward()
    for name, p in model.named_parameters():
        tower = name.startswith(('backbone.visual', 'backbone.text'))
        pos = name.endswith(('pos_embed', 'position_embedding.weight'))
        if tower and not pos:
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None, name
    # Early Bridger stage: gradient flows back through frozen blocks 3-4.
    zoom = model.backbone.interactions[0].stages[0].zoom_in[0].weight
    assert float(zoom.grad.abs().sum()) > 0
    # The visual positional embedding gets gradient through all blocks.
    assert float(model.backbone.visual.pos_embed.grad.abs().sum()) > 0
    # The gradients through the whole model are the true ones: finite
    # difference of the float64 logits' mean square (mmseg's sigmoid
    # cross-entropy returns float32, too coarse for a finite difference).
    model.double()
    tok, mask = text_of(ds)

    def logits_loss():
        torch.manual_seed(0)
        return model(img.double(), tok, mask).square().mean()

    # eps 1e-7: the logits are strongly curved along the gradient (at 1e-6
    # the central difference is already 1e-5 off).
    assert_gradient_matches_finite_difference(
        logits_loss, [p for p in model.parameters() if p.requires_grad],
        eps=1e-7)
    model.float()
    model.eval()
    with torch.no_grad():
        pred = run_samples(model, img, token_samples(tokens(5, 8)),
                           mode='predict')
    assert pred[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_segmentor_text_encoder_rules():
    with pytest.raises(ValueError, match='set text_encoder=None'):
        MODELS.build(dict(
            type='RefSegmentor',
            backbone=dict(type='DualEncoderBackbone', visual=ETRIS_TINY_VIT,
                          text=ETRIS_TINY_TEXT),
            text_encoder=ETRIS_TINY_TEXT,
            decode_head=dict(type='CRISHead', in_channels=16, channels=8,
                             sent_channels=20, loss_decode=BCE)))
    model = tiny_etris()
    with pytest.raises(ValueError, match='encodes the text together'):
        model.encode_text(*text_of(token_samples(tokens(5))))


def test_tiny_etris_rn_trains_only_adapters_head_and_positions():
    model = tiny_etris_rn().train()
    rn = model.backbone.visual
    bns = [m for m in rn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # eval, even connect's
    stats = {n: b.clone() for n, b in rn.named_buffers()}
    losses = run_samples(model, torch.randn(2, 3, 64, 64),
                         token_samples(tokens(5, 8)), mode='loss')
    losses['decode.loss_ce'].backward()
    expected = ('backbone.interactions.', 'fusion.', 'decode_head.',
                'backbone.visual.attnpool.positional_embedding',
                'backbone.text.clip.text_model.embeddings.position_embedding')
    for name, p in model.named_parameters():
        if name.startswith(expected):
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    # The random `connect` stays frozen (upstream ETRIS).
    assert not rn.attnpool.connect[0].weight.requires_grad
    # Gradient reaches the first Bridger stage through frozen layer3/4.
    assert float(model.backbone.interactions[0].stages[0].zoom_in.weight
                 .grad.abs().sum()) > 0
    # Frozen BN statistics did not move in the training forward.
    for n, b in rn.named_buffers():
        assert torch.equal(b, stats[n]), n
