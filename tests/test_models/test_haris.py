"""HARIS: frozen SAM ViT backbone, the Human-Like Attention block, the
hierarchical fusion, the query-token mask head, the binary focal loss, the
ablation flags and the whole frozen-encoder model."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.structures import PixelData
from mmpretrain.models.backbones import ViTSAM

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from ris_plugins.models import TextFeatures
from ris_plugins.models.backbones.sam_vit import SAMViT
from ris_plugins.models.fusion.hierarchical_fusion import HierarchicalHLA
from ris_plugins.models.fusion.hla import HLABlock
from ris_plugins.models.heads.query_mask_head import QueryMaskHead
from ris_plugins.models.losses import BinaryFocalLoss

from ..conftest import ROOT, run_samples

SOT, EOT = 49406, 49407
DEMO_CFG = osp.join(ROOT, 'configs', 'demo',
                    'haris-small_tiny-sam-clip_1xb16-2k_refshapes-160x160.py')
HARIS_CFG = osp.join(ROOT, 'configs', 'haris',
                     'haris_sam-vit-b_1xb16-50e_refcoco-480x480.py')
TINY_SAM = dict(embed_dims=32, num_layers=4, num_heads=2,
                feedforward_channels=64, global_attn_indexes=[1, 3])
C_W, C_S, D = 24, 20, 16  # word, sentence, HLA widths


def tiny_sam(**kw) -> SAMViT:
    cfg = dict(type='SAMViT', arch=TINY_SAM, img_size=32, patch_size=8,
               window_size=2, out_channels=8)
    cfg.update(kw)
    model = MODELS.build(cfg)
    torch.manual_seed(0)
    nn.init.normal_(model.pos_embed, std=0.5)  # non-zero absolute table
    return model


def text_feats(batch=2, length=5, pad=(2, 0), seed=0) -> TextFeatures:
    """Random words (B, T, C_W) whose last ``pad[b]`` positions are
    padding, and sentences (B, C_S)."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b, n in enumerate(pad):
        if n:
            mask[b, length - n:] = True
    return TextFeatures(torch.randn(batch, length, C_W, generator=g),
                        torch.randn(batch, C_S, generator=g), mask)


def hla(**kw) -> HLABlock:
    torch.manual_seed(0)
    return HLABlock(12, C_W, C_S, D, **kw).eval()


# ---------------------------------------------------------------- SAMViT
def test_sam_default_taps_shapes_and_neck_at_other_input_size():
    model = tiny_sam()
    assert model.out_indices == [1, 3]  # the global-attention blocks
    outs = model(torch.randn(2, 3, 48, 40))  # grid 6 x 5, table is 4 x 4
    assert [o.shape for o in outs] == [(2, 32, 6, 5)] * 2
    neck = tiny_sam(out_indices=(0, 2, -1), neck_as_deep=True)
    outs = neck(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [32, 32, 8]
    assert neck.feat_channels == (32, 32, 8)


def test_sam_taps_match_mmpretrain_vitsam():
    """Taps equal mmpretrain's own ViTSAM forward with the same weights
    (raw blocks: out_channels=0; neck: ViTSAM's last-block output)."""
    model = tiny_sam(out_indices=(0, 1, 3), neck_as_deep=True)
    x = torch.randn(1, 3, 40, 40)  # not the 32 of the tables
    outs = model(x)
    raw = ViTSAM(arch=TINY_SAM, img_size=32, patch_size=8, window_size=2,
                 out_channels=0, out_indices=[0, 1, 3])
    raw.eval()  # mmpretrain's train() returns None: no chaining
    raw.load_state_dict({k: v for k, v in model.state_dict().items()
                         if not k.startswith('channel_reduction')})
    ref = raw(x)
    torch.testing.assert_close(outs[0], ref[0])
    torch.testing.assert_close(outs[1], ref[1])
    necked = ViTSAM(arch=TINY_SAM, img_size=32, patch_size=8, window_size=2,
                    out_channels=8, out_indices=[3])
    necked.eval()
    necked.load_state_dict(model.state_dict())
    torch.testing.assert_close(outs[2], necked(x)[0])


def test_sam_frozen_and_eval():
    model = tiny_sam()
    assert not any(p.requires_grad for p in model.parameters())
    assert model.train() is model and not model.training
    out = model(torch.randn(1, 3, 32, 32))[0]
    assert not out.requires_grad
    trainable = tiny_sam(frozen=False).train()
    assert trainable.training
    assert all(p.requires_grad for p in trainable.parameters())


@pytest.mark.parametrize('kw, match', [
    (dict(out_indices=(1, 4)), 'outside the encoder depth'),
    (dict(out_indices=(-5, )), 'outside the encoder depth'),
    (dict(out_indices=(3, 1)), 'increasing'),
    (dict(out_indices=(1, 2), neck_as_deep=True), 'final block'),
    (dict(out_type='avg_featmap'), 'featmap'),
])
def test_sam_bad_taps(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_sam(**kw)


# ------------------------------------------------------------- HLA block
def explicit_lwa(block: HLABlock, v: torch.Tensor, w: torch.Tensor,
                 pad: torch.Tensor) -> torch.Tensor:
    """LN(v + Wo softmax_T((v Wq)(w Wk)^T / sqrt(D), pad -> -inf) w Wv),
    written out with F.linear on the block's weights. v (B, N, D)."""
    q = F.linear(v, block.q.weight, block.q.bias)
    k = F.linear(w, block.k.weight, block.k.bias)
    a = torch.einsum('bnd,btd->bnt', q, k) / math.sqrt(D)
    a = a.masked_fill(pad[:, None], float('-inf'))
    val = F.linear(w, block.lw_value.weight, block.lw_value.bias)
    y = F.linear(a.softmax(-1) @ val, block.lw_out.weight, block.lw_out.bias)
    return F.layer_norm(v + y, (D, ), block.v_norm.weight, block.v_norm.bias)


def project(block: HLABlock, visual, text):
    v = F.conv2d(visual, block.v_proj.weight, block.v_proj.bias)
    v = v.flatten(2).transpose(1, 2)  # (B, N, D)
    w = F.linear(text.word_feats, block.w_proj.weight, block.w_proj.bias)
    return v, w


def test_hla_shapes():
    visual, text = torch.randn(2, 12, 3, 4), text_feats()
    out_v, out_w = hla()(visual, text.word_feats, text.pad_mask,
                         text.sent_feat)
    assert out_v.shape == (2, D, 3, 4) and out_w.shape == (2, 5, D)


def test_hla_without_feedback_is_explicit_bidirectional_attention():
    block = hla(use_feedback=False)
    visual, text = torch.randn(2, 12, 3, 4), text_feats()
    out_v, out_w = block(visual, text.word_feats, text.pad_mask,
                         text.sent_feat)
    v, w = project(block, visual, text)
    ref_v = explicit_lwa(block, v, w, text.pad_mask)  # (B, N, D)
    torch.testing.assert_close(out_v.flatten(2).transpose(1, 2), ref_v)
    # VWA: softmax over the 12 visual tokens of A^T.
    q = F.linear(v, block.q.weight, block.q.bias)
    k = F.linear(w, block.k.weight, block.k.bias)
    p = (torch.einsum('btd,bnd->btn', k, q) / math.sqrt(D)).softmax(-1)
    val = F.linear(v, block.vw_value.weight, block.vw_value.bias)
    y = F.linear(p @ val, block.vw_out.weight, block.vw_out.bias)
    ref_w = F.layer_norm(w + y, (D, ), block.w_norm.weight,
                         block.w_norm.bias)
    real = ~text.pad_mask  # padded words' outputs are never read
    torch.testing.assert_close(out_w[real], ref_w[real])


def test_feedback_changes_output_and_switching_off_restores_lwa():
    fb = hla()  # feedback on (visual, add)
    plain = hla(use_feedback=False)
    plain.load_state_dict(fb.state_dict(), strict=False)  # shared weights
    visual, text = torch.randn(2, 12, 3, 4), text_feats()
    args = (visual, text.word_feats, text.pad_mask, text.sent_feat)
    v_fb, w_fb = fb(*args)
    v_plain, w_plain = plain(*args)
    assert (v_fb - v_plain).abs().max() > 1e-2  # feedback matters
    torch.testing.assert_close(w_fb, w_plain)  # VWA is not fed back
    v, w = project(fb, visual, text)
    torch.testing.assert_close(v_plain.flatten(2).transpose(1, 2),
                               explicit_lwa(fb, v, w, text.pad_mask))
    # Feedback 'visual' + 'add', written out: f = MLP(LWA(v) * s), LWA
    # again on v + f.
    s = F.linear(text.sent_feat, fb.s_proj.weight, fb.s_proj.bias)
    f = fb.feedback(explicit_lwa(fb, v, w, text.pad_mask) * s[:, None])
    ref = explicit_lwa(fb, v + f, w, text.pad_mask)
    torch.testing.assert_close(v_fb.flatten(2).transpose(1, 2), ref)


@pytest.mark.parametrize('at', ['visual', 'attention'])
@pytest.mark.parametrize('mode', ['gate', 'add'])
def test_feedback_variants_differ_from_plain(at, mode):
    fb = hla(feedback_at=at, feedback_mode=mode)
    plain = hla(use_feedback=False)
    plain.load_state_dict(fb.state_dict(), strict=False)
    visual, text = torch.randn(2, 12, 3, 4), text_feats()
    args = (visual, text.word_feats, text.pad_mask, text.sent_feat)
    assert (fb(*args)[0] - plain(*args)[0]).abs().max() > 1e-3
    assert fb.feedback[-1].out_features == (1 if mode == 'gate' else D)


def test_hla_ignores_padded_words():
    block = hla(feedback_at='attention', feedback_mode='gate')
    visual, text = torch.randn(2, 12, 3, 4), text_feats(pad=(2, 0))
    words = text.word_feats.clone()
    words[0, -2:] = 100.0  # padded positions of sample 0
    a = block(visual, text.word_feats, text.pad_mask, text.sent_feat)
    b = block(visual, words, text.pad_mask, text.sent_feat)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1][:, :3], b[1][:, :3])


def test_hla_ablation_structure():
    assert not hasattr(hla(use_vw=False), 'vw_value')
    no_lw = hla(use_lw=False)
    assert not hasattr(no_lw, 'lw_value') and not no_lw.use_feedback
    ca = hla(replace_with_cross_attn=True, num_heads=4)
    assert isinstance(ca.cross_attn, nn.MultiheadAttention)
    visual, text = torch.randn(2, 12, 3, 4), text_feats()
    out_v, out_w = ca(visual, text.word_feats, text.pad_mask, text.sent_feat)
    _, w = project(ca, visual, text)
    torch.testing.assert_close(out_w, w)  # words pass through projected
    with pytest.raises(ValueError, match='feedback_at'):
        hla(feedback_at='words')
    with pytest.raises(ValueError, match='feedback_mode'):
        hla(feedback_mode='mul')
    with pytest.raises(ValueError, match='widths'):
        hla()(torch.randn(1, 8, 2, 2), text.word_feats[:1],
              text.pad_mask[:1], text.sent_feat[:1])


# ------------------------------------------------------ hierarchical HLA
def test_hierarchical_shapes_injection_and_flags():
    torch.manual_seed(0)
    levels = [torch.randn(2, 12, 8, 8), torch.randn(2, 10, 8, 8),
              torch.randn(2, 6, 8, 8)]
    text = text_feats()
    fusion = HierarchicalHLA([12, 10, 6], C_W, C_S, D).eval()
    (x, ), out_text = fusion(levels, text)
    assert x.shape == (2, D, 8, 8) and out_text.word_feats.shape == (2, 5, D)
    assert out_text.sent_feat is text.sent_feat
    assert len(fusion.blocks) == 3 and len(fusion.inject) == 2
    assert fusion.inject[0].conv.out_channels == 10  # D -> C_2
    # Level 3 = HLA_3(F_3 + Conv(M_2)): changing the shallow level changes
    # the output only through the injection.
    (x2, ), _ = fusion([levels[0] + 1.0] + levels[1:], text)
    assert (x - x2).abs().max() > 1e-3
    flat = HierarchicalHLA([12, 10, 6], C_W, C_S, D,
                           use_hierarchy=False).eval()
    assert len(flat.blocks) == 1 and len(flat.inject) == 0
    (y, ), _ = flat(levels, text)
    (y2, ), _ = flat([levels[0] + 1.0] + levels[1:], text)
    torch.testing.assert_close(y, y2)  # shallow level unused
    pyramid = HierarchicalHLA([12, 10, 6], C_W, C_S, D, stride=2).eval()
    assert pyramid(levels, text)[0][0].shape == (2, D, 2, 2)  # 8 -> 4 -> 2
    chain = HierarchicalHLA([12, 10, 6], C_W, C_S, D,
                            word_flow='chain').eval()
    assert chain.blocks[1].text_channels == D  # reads level 1's words
    assert chain(levels, text)[1].word_feats.shape == (2, 5, D)
    with pytest.raises(ValueError, match='word_flow'):
        HierarchicalHLA([12], C_W, C_S, D, word_flow='sum')
    with pytest.raises(ValueError, match='3 visual levels'):
        fusion(levels[:2], text)
    with pytest.raises(ValueError, match='odd'):
        HierarchicalHLA([12], C_W, C_S, D, kernel_size=2)


# ------------------------------------------------------- QueryMaskHead
def head(**kw) -> QueryMaskHead:
    torch.manual_seed(0)
    cfg = dict(in_channels=D, channels=8, num_layers=2, num_heads=2,
               ffn_channels=32, decoder_dropout=0.0)
    cfg.update(kw)
    return QueryMaskHead(**cfg).eval()


def test_query_head_shapes_and_product():
    h = head()
    x = torch.randn(2, D, 5, 6)
    text = text_feats()
    text = TextFeatures(torch.randn(2, 5, D), text.sent_feat, text.pad_mask)
    logits = h((x, ), text)
    assert logits.shape == (2, 1, 20, 24)
    # logits = MLP(query output) . upsampled map
    emb = h.mask_mlp(h.decode_query(x, text))  # (B, C)
    up = h.upsample(x)  # (B, C, 4h, 4w)
    ref = (emb[:, :, None, None] * up).sum(1, keepdim=True)
    torch.testing.assert_close(logits, ref)
    # Padded words are masked keys: the query token ignores them.
    words = text.word_feats.clone()
    words[0, -2:] = 50.0
    moved = h((x, ), TextFeatures(words, text.sent_feat, text.pad_mask))
    torch.testing.assert_close(logits, moved)
    replaced = head(decoder_replaced=True)
    assert not hasattr(replaced, 'layers')
    assert replaced((x, ), text).shape == (2, 1, 20, 24)


def test_query_head_errors():
    with pytest.raises(ValueError, match='multiple of 4'):
        head(in_channels=18)
    with pytest.raises(ValueError, match='out_channels'):
        head(out_channels=2)
    with pytest.raises(ValueError, match='loss_at'):
        head(loss_at='pixels')
    text = text_feats()  # words 24 wide, head query width 16
    with pytest.raises(ValueError, match='query width'):
        head()((torch.randn(2, D, 4, 4), ), text)


def test_binary_focal_loss_by_hand():
    loss = BinaryFocalLoss(alpha=0.25, gamma=2.0)
    pred = torch.tensor([0.0, 2.0, -1.0, 3.0]).view(1, 1, 2, 2)
    label = torch.tensor([1, 0, 0, 255]).view(1, 2, 2)
    p = torch.sigmoid(torch.tensor([0.0, 2.0, -1.0]))
    terms = [  # -alpha_t (1 - p_t)^2 log p_t
        -0.25 * (1 - p[0])**2 * torch.log(p[0]),
        -0.75 * p[1]**2 * torch.log(1 - p[1]),
        -0.75 * p[2]**2 * torch.log(1 - p[2]),
    ]
    torch.testing.assert_close(loss(pred, label), sum(terms) / 3)
    torch.testing.assert_close(
        BinaryFocalLoss(loss_weight=20.0)(pred, label[:, None]),
        20 * sum(terms) / 3)
    with pytest.raises(ValueError, match='logits'):
        loss(torch.zeros(1, 2, 2, 2), label)


# ----------------------------------------------------------- whole model
def clip_samples(batch, size=32, lengths=(5, 7), total=8, seed=0):
    """Samples with CLIP ids (SOT, words, EOT, zero padding) and masks."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(batch):
        n = lengths[b % len(lengths)]
        tok = torch.zeros(total, dtype=torch.long)
        tok[0], tok[n - 1] = SOT, EOT
        tok[1:n - 1] = torch.randint(300, 3000, (n - 2, ), generator=g)
        ds = SegDataSample(metainfo=dict(
            text_tokens=tok, text_mask=(tok != 0).long(),
            ori_shape=(size, size), img_shape=(size, size),
            pad_shape=(size, size), img_padding_size=(0, 0, 0, 0)))
        ds.gt_sem_seg = PixelData(
            data=torch.randint(0, 2, (1, size, size), generator=g))
        out.append(ds)
    return out


def tiny_haris(**flags):
    """The demo config shrunk further; ``flags`` go to fusion.hla_cfg,
    fusion or decode_head, wherever the key belongs."""
    cfg = Config.fromfile(DEMO_CFG).model
    cfg.backbone.update(arch=dict(TINY_SAM), img_size=32, patch_size=8,
                        window_size=2, out_indices=(1, 2, 3),
                        out_channels=8)
    cfg.text_encoder.update(config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, projection_dim=C_S), context_length=8)
    cfg.fusion.update(in_channels=[32, 32, 32], text_channels=32,
                      sent_channels=C_S, embed_dims=D)
    cfg.decode_head.update(in_channels=D, channels=8, num_heads=2,
                           ffn_channels=32)
    for key, value in flags.items():
        if key in ('use_hierarchy', 'kernel_size', 'stride'):
            cfg.fusion[key] = value
        elif key == 'decoder_replaced':
            cfg.decode_head[key] = value
        else:
            cfg.fusion.hla_cfg[key] = value
    torch.manual_seed(0)
    return MODELS.build(cfg)


def test_gradients_reach_only_fusion_and_head():
    model = tiny_haris()
    model.train()
    assert not model.backbone.training
    assert not model.text_encoder.clip.training
    losses = run_samples(model, torch.randn(2, 3, 32, 32), clip_samples(2),
                         mode='loss')
    assert set(losses) == {'decode.loss_focal', 'decode.loss_dice',
                           'decode.acc_seg'}
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for name, p in model.named_parameters():
        trainable = name.startswith(('fusion.', 'decode_head.'))
        assert p.requires_grad == trainable, name
        if trainable:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_parts = sum(p.numel() for m in (model.fusion, model.decode_head)
                  for p in m.parameters())
    assert n_train == n_parts


ABLATIONS = [
    dict(use_feedback=False), dict(use_vw=False), dict(use_lw=False),
    dict(replace_with_cross_attn=True, num_heads=2),
    dict(use_hierarchy=False), dict(decoder_replaced=True),
    dict(feedback_at='attention', feedback_mode='gate'),
    dict(feedback_mode='gate'), dict(stride=2, kernel_size=1),
]


@pytest.mark.parametrize('flags', ABLATIONS, ids=lambda f: ','.join(f))
def test_each_ablation_builds_trains_and_predicts(flags):
    model = tiny_haris(**flags)
    losses = run_samples(model, torch.randn(2, 3, 32, 32), clip_samples(2),
                         mode='loss')
    loss = losses['decode.loss_focal'] + losses['decode.loss_dice']
    loss.backward()
    grads = [p.grad for p in model.decode_head.parameters()
             if p.requires_grad]
    assert all(g is not None for g in grads)
    model.eval()
    with torch.no_grad():
        pred = run_samples(model, torch.randn(1, 3, 32, 32),
                           clip_samples(1), mode='predict')
    assert pred[0].pred_sem_seg.data.shape == (1, 32, 32)


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
