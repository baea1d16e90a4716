"""DualEncoderBackbone: the block-by-block runner of the CLIP ViT / ResNet and
text towers, hook points, freezing, masked attention and SNF shortcuts."""
import pytest
import torch
import torch.nn as nn

from mmseg.registry import MODELS
from ris_plugins.models.backbones._dual_encoder.vit_tower import vit_attention
from ris_plugins.models.backbones.dual_encoder import DualEncoderBackbone

from ...conftest import (ETRIS_TINY_BRIDGER, ETRIS_TINY_BRIDGER_RN,
                         ETRIS_TINY_RN, ETRIS_TINY_TEXT, RN_TRAINABLE,
                         TINY_SNF, tiny_dual_encoder, tokens)


def test_runner_without_adapters_equals_the_library_towers():
    """No hooks: the block-by-block run must reproduce CLIPViT.forward and
    RefCLIPTextEncoder.forward (the library paths)."""
    bb = tiny_dual_encoder(interactions=[], visual_taps=(1, 3)).eval()
    img, tok = torch.randn(2, 3, 64, 80), tokens(5, 8)
    with torch.no_grad():
        out = bb(img, tok)
        bb.visual.out_indices = [0, 2, 3]
        ref_vis = bb.visual(img)
        ref_txt = bb.text(tok)
    assert len(out.visual) == 3 and out.losses == {}
    for got, want in zip(out.visual, ref_vis):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want)
    assert out.visual[-1].shape == (2, 16, 4, 5)
    torch.testing.assert_close(out.text.word_feats, ref_txt.word_feats)
    torch.testing.assert_close(out.text.sent_feat, ref_txt.sent_feat)
    assert torch.equal(out.text.pad_mask, tok == 0)


def test_runner_freezes_towers_and_keeps_them_in_eval():
    bb = tiny_dual_encoder()
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    tower = {n for n in trainable if n.startswith(('visual', 'text'))}
    assert tower == {'visual.pos_embed',
                     'text.clip.text_model.embeddings.position_embedding.'
                     'weight'}
    assert all(n.startswith('interactions') for n in trainable - tower)
    bb.train()
    assert not bb.visual.training and not bb.text.training
    assert not bb.text.clip.training
    assert bb.interactions[0].training


def test_runner_bad_hook_points_and_widths():
    with pytest.raises(ValueError, match=r'4 blocks, valid hook points '
                       r'are 0\.\.4'):
        tiny_dual_encoder(interactions=[dict(after=[(2, 2), (24, 4)],
                                             module=ETRIS_TINY_BRIDGER)])
    with pytest.raises(ValueError, match='valid hook points are 1..4'):
        tiny_dual_encoder(visual_taps=(0, ))
    with pytest.raises(ValueError, match='go back'):
        tiny_dual_encoder(interactions=[dict(after=[(2, 3), (3, 1)],
                                             module=ETRIS_TINY_BRIDGER)])
    with pytest.raises(ValueError, match='num_stages=2 but is hooked at 3'):
        tiny_dual_encoder(interactions=[dict(after=[(1, 1), (2, 2), (3, 3)],
                                             module=ETRIS_TINY_BRIDGER)])
    with pytest.raises(ValueError, match='visual_dim=768 does not match '
                       'the visual tower width 32'):
        tiny_dual_encoder(interactions=[dict(after=[(2, 2), (4, 4)],
                                             module=dict(ETRIS_TINY_BRIDGER,
                                                         visual_dim=768))])
    with pytest.raises(ValueError, match="matches no tower parameter"):
        tiny_dual_encoder(trainable=('no_such_param', ))
    with pytest.raises(ValueError, match='after=..., module=...'):
        tiny_dual_encoder(interactions=[dict(at=(1, 1),
                                             module=ETRIS_TINY_BRIDGER)])


def test_masked_vit_attention_equals_attention_without_the_masked_keys():
    """Keys hidden by the mask must act as if removed from the sequence."""
    bb = tiny_dual_encoder().eval()
    attn = bb.visual.layers[0].attn
    x = torch.randn(1, 7, 32)
    mask = torch.tensor([[False, True, True, False, False, False, False]])
    with torch.no_grad():
        full = vit_attention(attn, x, mask)
        kept = attn(x[:, ~mask[0]])  # the library module, 5 tokens
        torch.testing.assert_close(full[:, ~mask[0]], kept)
        torch.testing.assert_close(
            vit_attention(attn, x, torch.zeros(1, 7, dtype=torch.bool)),
            attn(x))


def tiny_rn_backbone(**kw) -> DualEncoderBackbone:
    torch.manual_seed(0)
    cfg = dict(type='DualEncoderBackbone', visual=ETRIS_TINY_RN,
               text=ETRIS_TINY_TEXT,
               interactions=[dict(after=[(1, 2), (2, 3), (3, 4)],
                                  module=ETRIS_TINY_BRIDGER_RN)],
               visual_taps=(1, 2), trainable=RN_TRAINABLE)
    cfg.update(kw)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def test_resnet_runner_without_adapters_equals_clip_resnet():
    """No hooks: taps (1, 2) and the final map must be CLIPResNet.forward's
    (layer2, layer3, attnpool(layer4)); the text RefCLIPTextEncoder's."""
    bb = tiny_rn_backbone(interactions=[]).eval()
    img, tok = torch.randn(2, 3, 64, 96), tokens(5, 8)
    with torch.no_grad():
        out = bb(img, tok)
        ref_vis = bb.visual(img)
        ref_txt = bb.text(tok)
    assert [tuple(v.shape) for v in out.visual] == [
        (2, 64, 8, 12), (2, 128, 4, 6), (2, 16, 2, 3)]
    for got, want in zip(out.visual, ref_vis):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out.text.word_feats, ref_txt.word_feats)
    torch.testing.assert_close(out.text.sent_feat, ref_txt.sent_feat)


def test_resnet_runner_calls_bridger_between_stages():
    """With the Bridger: layer2 -> stage 0 -> layer3 -> stage 1 -> layer4
    -> stage 2 -> attnpool, text blocks 1-2 / 3 / 4 in between, recomputed
    here by hand from the library modules."""
    bb = tiny_rn_backbone().eval()
    img, tok = torch.randn(2, 3, 64, 64), tokens(5, 8)
    rn, br = bb.visual, bb.interactions[0]
    text_layers = bb.text.clip.text_model.encoder.layers
    pad = tok == 0

    def text_blocks(t, lo, hi):
        mask = torch.full((8, 8), torch.finfo(t.dtype).min).triu(1)
        for layer in text_layers[lo:hi]:
            t = layer(t, None, mask[None, None])[0]
        return t

    with torch.no_grad():
        out = bb(img, tok)
        x = img
        for conv, bn in ((rn.conv1, rn.bn1), (rn.conv2, rn.bn2),
                         (rn.conv3, rn.bn3)):
            x = torch.relu(bn(conv(x)))
        x = rn.layer1(rn.avgpool(x))
        t = bb.text.clip.text_model.embeddings(input_ids=tok)
        taps, prev = [], None
        for stage, (layer, lo, hi) in enumerate(
                ((rn.layer2, 0, 2), (rn.layer3, 2, 3), (rn.layer4, 3, 4))):
            x, t = layer(x), text_blocks(t, lo, hi)
            x, t, prev = br(stage, x, t, pad_mask=pad, prev=prev)
            taps.append(x)
        want = [taps[0], taps[1], rn.attnpool(x)]
    for got, ref in zip(out.visual, want):
        torch.testing.assert_close(got, ref)
    words = bb.text.clip.text_model.final_layer_norm(t)
    torch.testing.assert_close(out.text.word_feats, words)
    # The Bridger changed the maps (not a no-op).
    ref_plain = bb.visual(img)
    assert not torch.allclose(out.visual[0], ref_plain[0])


def test_resnet_runner_bad_input():
    with pytest.raises(ValueError, match='3 blocks, valid hook points '
                       r'are 0\.\.3'):
        tiny_rn_backbone(interactions=[dict(
            after=[(1, 2), (2, 3), (4, 4)], module=ETRIS_TINY_BRIDGER_RN)])
    with pytest.raises(ValueError, match=r'BridgerRN.visual_dim\[1\]=100 '
                       'does not match the visual tower width 128 at hook '
                       r'point \(2, 3\)'):
        tiny_rn_backbone(interactions=[dict(
            after=[(1, 2), (2, 3), (3, 4)],
            module=dict(ETRIS_TINY_BRIDGER_RN, visual_dim=(64, 100, 256)))])
    with pytest.raises(ValueError, match='text_dim=512 does not match the '
                       'text tower width 24'):
        tiny_rn_backbone(interactions=[dict(
            after=[(1, 2), (2, 3), (3, 4)],
            module=dict(ETRIS_TINY_BRIDGER_RN, text_dim=512))])
    with pytest.raises(ValueError, match='shortcuts .*needs a CLIPViT'):
        tiny_rn_backbone(shortcuts=dict(type='SNF'))
    with pytest.raises(ValueError, match='LIMPrompts edits the token '
                       'sequences'):
        tiny_rn_backbone(interactions=[dict(
            after=(0, 0), module=dict(type='LIMPrompts', visual_dim=64,
                                      text_dim=24))])


def test_runner_with_identity_snf_equals_plain_runner():
    """With u = 0 the flows are the identity, so the re-expressed blocks
    (flows around the library blocks' submodules) must equal the plain
    library blocks."""
    plain = tiny_dual_encoder(interactions=[], visual_taps=(2, )).eval()
    snf = tiny_dual_encoder(interactions=[], visual_taps=(2, ),
                            shortcuts=TINY_SNF).eval()
    snf.load_state_dict(plain.state_dict(), strict=False)
    for name, p in snf.shortcut_module.named_parameters():
        if name.endswith('.u'):
            nn.init.zeros_(p)
    img, tok = torch.randn(2, 3, 64, 64), tokens(5, 8)
    with torch.no_grad():
        a, b = plain(img, tok), snf(img, tok)
    for x, y in zip(a.visual, b.visual):
        torch.testing.assert_close(x, y)
    torch.testing.assert_close(a.text.word_feats, b.text.word_feats)
    # Switched on, the flows change the outputs.
    nn.init.constant_(snf.shortcut_module.visual[0][0].mu, 0.5)
    with torch.no_grad():
        c = snf(img, tok)
    assert not torch.allclose(a.visual[-1], c.visual[-1])
    with pytest.raises(ValueError, match='text_dim=24 but the text tower'):
        tiny_dual_encoder(interactions=[],
                          shortcuts=dict(TINY_SNF, text_dim=24,
                                         visual_dim=32, text_layers=4),
                          text=dict(ETRIS_TINY_TEXT, config=dict(
                              ETRIS_TINY_TEXT['config'], hidden_size=16)))
