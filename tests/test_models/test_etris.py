"""ETRIS: the dual-encoder runner (DualEncoderBackbone), BridgerViT, the HA
neck, the RefSegmentor path for backbones that encode text, and the
configs (full-size parameter counts)."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from ris_plugins.models import BridgerViT, CRISHead, HANeck, TextFeatures
from ris_plugins.models.backbones._dual_encoder.vit_tower import \
    vit_attention
from ris_plugins.models.backbones.dual_encoder import DualEncoderBackbone

from ..conftest import ROOT, run_samples, text_of

SOT, EOT = 49406, 49407
ETRIS_CFG = osp.join(ROOT, 'configs', 'etris',
                     'etris_vit-b16_8xb4-50e_refcoco-416x416.py')
# Tiny towers: ViT width 32, 4 blocks; text width 24, 4 blocks.
TINY_VIT = dict(type='CLIPViT', arch=dict(embed_dims=32, num_layers=4,
                                          num_heads=4,
                                          feedforward_channels=64),
                img_size=64, patch_size=16, output_dim=16)
TINY_TEXT = dict(type='RefCLIPTextEncoder', context_length=8,
                 config=dict(hidden_size=24, intermediate_size=48,
                             num_hidden_layers=4, num_attention_heads=2,
                             projection_dim=20))
TINY_BRIDGER = dict(type='BridgerViT', visual_dim=32, text_dim=24, dim=8,
                    num_heads=2, num_stages=2)
BCE = dict(type='CrossEntropyLoss', use_sigmoid=True)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tokens(*lengths, total=8):
    """(B, total) CLIP ids: SOT, (n - 2) words, EOT, zero padding."""
    out = torch.zeros(len(lengths), total, dtype=torch.long)
    for b, n in enumerate(lengths):
        out[b, 0] = SOT
        out[b, 1:n - 1] = torch.arange(n - 2) * 97 + 300 + b
        out[b, n - 1] = EOT
    return out


def tiny_backbone(**kw) -> DualEncoderBackbone:
    torch.manual_seed(0)
    cfg = dict(type='DualEncoderBackbone', visual=TINY_VIT, text=TINY_TEXT,
               interactions=[dict(after=[(2, 2), (4, 4)],
                                  module=TINY_BRIDGER)],
               visual_taps=(2, ))
    cfg.update(kw)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def tiny_segmentor(backbone: dict = None,
                   extra_input: bool = False) -> nn.Module:
    """RefSegmentor on the tiny towers; ``backbone`` overrides the
    DualEncoderBackbone's keys."""
    torch.manual_seed(0)
    bb = dict(type='DualEncoderBackbone', visual=TINY_VIT, text=TINY_TEXT,
              interactions=[dict(after=[(2, 2), (4, 4)],
                                 module=TINY_BRIDGER)],
              visual_taps=(2, 3))
    bb.update(backbone or {})
    model = MODELS.build(dict(
        type='RefSegmentor',
        data_preprocessor=dict(type='RefDataPreProcessor', mean=[0, 0, 0],
                               std=[1, 1, 1], seg_pad_val=0),
        backbone=bb,
        text_encoder=None,
        fusion=dict(type='HANeck', in_channels=[32, 32, 16], channels=16,
                    text_channels=20, num_heads=2, extra_input=extra_input),
        decode_head=dict(type='CRISHead', in_channels=16, channels=8,
                         sent_channels=20, text_channels=24, num_layers=1,
                         num_heads=2, ffn_channels=32, loss_decode=BCE),
        train_cfg=dict(), test_cfg=dict(mode='whole')))
    model.init_weights()
    return model


def samples(tok, size=64):
    g = torch.Generator().manual_seed(0)
    out = []
    for t in tok:
        ds = SegDataSample(metainfo=dict(
            text_tokens=t, text_mask=(t != 0).long(), ori_shape=(size, size),
            img_shape=(size, size), pad_shape=(size, size),
            img_padding_size=(0, 0, 0, 0)))
        ds.gt_sem_seg = PixelData(
            data=torch.randint(0, 2, (1, size, size), generator=g))
        out.append(ds)
    return out


# ---------------------------------------------------------------- runner
def test_runner_without_adapters_equals_the_library_towers():
    """No hooks: the block-by-block run must reproduce CLIPViT.forward and
    RefCLIPTextEncoder.forward (the library paths)."""
    bb = tiny_backbone(interactions=[], visual_taps=(1, 3)).eval()
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
    bb = tiny_backbone()
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
        tiny_backbone(interactions=[dict(after=[(2, 2), (24, 4)],
                                         module=TINY_BRIDGER)])
    with pytest.raises(ValueError, match='valid hook points are 1..4'):
        tiny_backbone(visual_taps=(0, ))
    with pytest.raises(ValueError, match='go back'):
        tiny_backbone(interactions=[dict(after=[(2, 3), (3, 1)],
                                         module=TINY_BRIDGER)])
    with pytest.raises(ValueError, match='num_stages=2 but is hooked at 3'):
        tiny_backbone(interactions=[dict(after=[(1, 1), (2, 2), (3, 3)],
                                         module=TINY_BRIDGER)])
    with pytest.raises(ValueError, match='visual_dim=768 does not match '
                       'the visual tower width 32'):
        tiny_backbone(interactions=[dict(after=[(2, 2), (4, 4)],
                                         module=dict(TINY_BRIDGER,
                                                     visual_dim=768))])
    with pytest.raises(ValueError, match="matches no tower parameter"):
        tiny_backbone(trainable=('no_such_param', ))
    with pytest.raises(ValueError, match='after=..., module=...'):
        tiny_backbone(interactions=[dict(at=(1, 1), module=TINY_BRIDGER)])


def test_masked_vit_attention_equals_attention_without_the_masked_keys():
    """Keys hidden by the mask must act as if removed from the sequence."""
    bb = tiny_backbone().eval()
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


# --------------------------------------------------------------- Bridger
def test_bridger_vit_full_size_parameter_count():
    bridger = BridgerViT()  # ViT-B/16: 768, text 512, d 64, 8 heads
    assert n_params(bridger) == 598_592  # ris_methods.md 3.2
    assert bridger.stage_params == [199_360, 199_616, 199_616]


def test_bridger_stage_updates():
    """Visual residual >= 0 (zoom-out ends in ReLU), zero text-out keeps the
    text, the ladder state is needed after stage 0 and only patches change
    inside the runner (CLS is left alone)."""
    torch.manual_seed(0)
    br = BridgerViT(visual_dim=32, text_dim=24, dim=8, num_heads=2,
                    num_stages=2).eval()
    nn.init.zeros_(br.stages[0].text_out.weight)
    nn.init.zeros_(br.stages[0].text_out.bias)
    vis, txt = torch.randn(2, 32, 3, 4), torch.randn(2, 5, 24)
    v, t, ladder = br(0, vis, txt)
    assert v.shape == vis.shape and t.shape == txt.shape
    assert bool((v - vis >= 0).all()) and bool((v != vis).any())
    torch.testing.assert_close(t, txt)
    assert ladder[0].shape == (12, 2, 8) and ladder[1].shape == (5, 2, 8)
    with pytest.raises(ValueError, match='needs the ladder state'):
        br(1, vis, txt)
    with pytest.raises(ValueError, match='visual width 32 and text width '
                       '24, got 16 and 24'):
        br(0, torch.randn(2, 16, 3, 4), txt)
    # The ladder adds the previous stage's state before its LayerNorm.
    v1, _, (lv, lt) = br(1, vis, txt, prev=ladder)
    stage = br.stages[1]
    want = stage.ladder_v(
        stage.zoom_in(vis).flatten(2).permute(2, 0, 1) + ladder[0])
    torch.testing.assert_close(lv, want)


def test_bridger_gated_attention_matches_functional_mha():
    """v' = v * MHA(v; t): check against torch's functional MHA with the
    module's weights (an independent attention implementation path)."""
    torch.manual_seed(0)
    br = BridgerViT(visual_dim=32, text_dim=24, dim=8, num_heads=2,
                    num_stages=1)
    gate = br.stages[0].fuse_v
    q, kv = torch.randn(6, 2, 8), torch.randn(4, 2, 8)
    mha = gate.attn
    ref = F.multi_head_attention_forward(
        q, kv, kv, 8, 2, mha.in_proj_weight, mha.in_proj_bias, None, None,
        False, 0.0, mha.out_proj.weight, mha.out_proj.bias,
        training=False, need_weights=False)[0]
    torch.testing.assert_close(gate(q, kv), q * ref)


# -------------------------------------------------------------- HA neck
def test_ha_neck_and_etris_head_full_size_parameter_counts():
    neck = HANeck()  # ViT-B/16: 768 / 768 / 512 -> 512, strides 1
    head = CRISHead(in_channels=512, channels=256, sent_channels=512,
                    ffn_channels=512, loss_decode=BCE)
    assert n_params(neck) == 9_983_488
    assert n_params(neck) + n_params(head) == 22_671_361  # ris_methods 3.4


def test_ha_neck_gate_is_a_channel_gate():
    """One key: softmax = 1, so fq_i = f_i * (W_o (W_v s + b_v) + b_o)."""
    torch.manual_seed(0)
    neck = HANeck(in_channels=[8, 12, 6], channels=16, strides=[2, 1, 2],
                  text_channels=10, num_heads=2).eval()
    levels = [torch.randn(2, 8, 8, 8), torch.randn(2, 12, 4, 4),
              torch.randn(2, 6, 2, 2)]
    text = TextFeatures(torch.randn(2, 3, 10), torch.randn(2, 10),
                        torch.zeros(2, 3, dtype=torch.bool))
    (out, ), text_out = neck(levels, text)
    assert out.shape == (2, 16, 4, 4) and text_out is text
    # Rebuild with explicit channel gates.
    s = neck.text_proj(text.sent_feat)  # (B, C)
    fused = []
    for proj, gate, v in zip((neck.proj3, neck.proj4, neck.proj5),
                             neck.gates, levels):
        w_v = gate.in_proj_weight[32:]
        b_v = gate.in_proj_bias[32:]
        g = gate.out_proj(s @ w_v.T + b_v)  # (B, C)
        fused.append(proj(v) * g[:, :, None, None])
    x = neck.aggregate(torch.cat(fused, 1))
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h),
                            torch.linspace(-1, 1, w), indexing='ij')
    coords = torch.stack([xs, ys])[None].expand(b, 2, h, w)
    want = neck.out_conv(neck.coord_conv(torch.cat([x, coords], 1)))
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match='needs 3 visual levels'):
        neck(levels[:2], text)
    with pytest.raises(ValueError, match='level widths'):
        neck([levels[1], levels[1], levels[2]], text)


# ------------------------------------------------------------ segmentor
def test_segmentor_with_dual_encoder_trains_only_adapters_and_head():
    model = tiny_segmentor().train()
    img = torch.randn(2, 3, 64, 64)
    ds = samples(tokens(5, 8))
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
    model.eval()
    with torch.no_grad():
        pred = run_samples(model, img, samples(tokens(5, 8)), mode='predict')
    assert pred[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_segmentor_text_encoder_rules():
    with pytest.raises(ValueError, match='set text_encoder=None'):
        MODELS.build(dict(
            type='RefSegmentor',
            backbone=dict(type='DualEncoderBackbone', visual=TINY_VIT,
                          text=TINY_TEXT),
            text_encoder=TINY_TEXT,
            decode_head=dict(type='CRISHead', in_channels=16, channels=8,
                             sent_channels=20, loss_decode=BCE)))
    model = tiny_segmentor()
    with pytest.raises(ValueError, match='encodes the text together'):
        model.encode_text(*text_of(samples(tokens(5))))


# --------------------------------------------------------------- config
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


# ------------------------------------------------------- ResNet variants
# Tiny CLIP ResNet: w = 8, one Bottleneck per stage; widths after stem +
# layer1 / layer2 / layer3 / layer4: 32 / 64 / 128 / 256; 64 x 64 input
# gives 16^2, 8^2, 4^2, 2^2 maps.
TINY_RN = dict(type='CLIPResNet', base_channels=8, stage_blocks=(1, 1, 1, 1),
               input_size=64, num_attn_heads=2, output_dim=16)
TINY_BRIDGER_RN = dict(type='BridgerRN', visual_dim=(64, 128, 256),
                       text_dim=24, d_model=8, num_heads=2, ffn_dim=16)
RN_TRAINABLE = ('attnpool.positional_embedding', 'position_embedding')
ETRIS_RN_CFGS = {
    r: osp.join(ROOT, 'configs', 'etris',
                f'etris_{r}_8xb4-50e_refcoco-416x416.py')
    for r in ('r50', 'r101')
}


def tiny_rn_backbone(**kw) -> DualEncoderBackbone:
    torch.manual_seed(0)
    cfg = dict(type='DualEncoderBackbone', visual=TINY_RN, text=TINY_TEXT,
               interactions=[dict(after=[(1, 2), (2, 3), (3, 4)],
                                  module=TINY_BRIDGER_RN)],
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
            after=[(1, 2), (2, 3), (4, 4)], module=TINY_BRIDGER_RN)])
    with pytest.raises(ValueError, match=r'BridgerRN.visual_dim\[1\]=100 '
                       'does not match the visual tower width 128 at hook '
                       r'point \(2, 3\)'):
        tiny_rn_backbone(interactions=[dict(
            after=[(1, 2), (2, 3), (3, 4)],
            module=dict(TINY_BRIDGER_RN, visual_dim=(64, 100, 256)))])
    with pytest.raises(ValueError, match='text_dim=512 does not match the '
                       'text tower width 24'):
        tiny_rn_backbone(interactions=[dict(
            after=[(1, 2), (2, 3), (3, 4)],
            module=dict(TINY_BRIDGER_RN, text_dim=512))])
    with pytest.raises(ValueError, match='shortcuts .*needs a CLIPViT'):
        tiny_rn_backbone(shortcuts=dict(type='SNF'))
    with pytest.raises(ValueError, match='LIMPrompts edits the token '
                       'sequences'):
        tiny_rn_backbone(interactions=[dict(
            after=(0, 0), module=dict(type='LIMPrompts', visual_dim=64,
                                      text_dim=24))])


def tiny_rn_segmentor() -> nn.Module:
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='RefSegmentor',
        data_preprocessor=dict(type='RefDataPreProcessor', mean=[0, 0, 0],
                               std=[1, 1, 1], seg_pad_val=0),
        backbone=dict(type='DualEncoderBackbone', visual=TINY_RN,
                      text=TINY_TEXT,
                      interactions=[dict(after=[(1, 2), (2, 3), (3, 4)],
                                         module=TINY_BRIDGER_RN)],
                      visual_taps=(1, 2), trainable=RN_TRAINABLE),
        text_encoder=None,
        fusion=dict(type='HANeck', in_channels=[64, 128, 16], channels=16,
                    strides=[2, 1, 2], text_channels=20, num_heads=2),
        decode_head=dict(type='CRISHead', in_channels=16, channels=8,
                         sent_channels=20, text_channels=24, num_layers=1,
                         num_heads=2, ffn_channels=32, loss_decode=BCE),
        train_cfg=dict(), test_cfg=dict(mode='whole')))
    model.init_weights()
    return model


def test_tiny_etris_rn_trains_only_adapters_head_and_positions():
    model = tiny_rn_segmentor().train()
    rn = model.backbone.visual
    bns = [m for m in rn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)  # eval, even connect's
    stats = {n: b.clone() for n, b in rn.named_buffers()}
    losses = run_samples(model, torch.randn(2, 3, 64, 64),
                         samples(tokens(5, 8)), mode='loss')
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
