"""CRIS: CLIP ResNet with dense attention pool, CLIP text encoder, the
text-gated FPN, the vision-language decoder + projector head, the OpenAI
CLIP converter and the configs."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.structures import PixelData

from mmseg.registry import DATASETS, MODELS
from mmseg.structures import SegDataSample
from ris_plugins.datasets.transforms import TokenizeText
from ris_plugins.models import (CLIPResNet, CRISHead, DenseAttentionPool2d,
                                RefCLIPTextEncoder, TextFeatures,
                                VLTransformerDecoder, sine_pos_1d,
                                sine_pos_2d)
from ris_plugins.models.fusion import CRISFPN
from ris_plugins.utils.state_dict import load_state_dict_strict

from ..conftest import ROOT, load_tool, text_of

SOT, EOT = 49406, 49407
CRIS_CFG = osp.join(ROOT, 'configs', 'cris')
DEMO_CFG = osp.join(ROOT, 'configs', 'demo',
                    'cris-small_tiny-rn-minilm_1xb16-2k_refshapes-160x160.py')
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, projection_dim=48)
TINY_RN = dict(base_channels=8, stage_blocks=(1, 2, 1, 1),
               num_attn_heads=4, output_dim=48)
BCE = dict(type='CrossEntropyLoss', use_sigmoid=True)


def load_converter():
    return load_tool('model_converters/clip_to_ris.py')


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics, so eval-mode outputs exercise them."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) + 0.5
            m.bias.data = torch.randn(c, generator=g)
            m.running_mean = torch.randn(c, generator=g)
            m.running_var = torch.rand(c, generator=g) + 0.5


def tokens(*lengths, total=8):
    """(B, total) CLIP ids: SOT, (n - 2) words, EOT, zero padding."""
    out = torch.zeros(len(lengths), total, dtype=torch.long)
    for b, n in enumerate(lengths):
        out[b, 0] = SOT
        out[b, 1:n - 1] = torch.arange(n - 2) * 97 + 300 + b
        out[b, n - 1] = EOT
    return out


def tiny_text(context_length=8, **kw):
    torch.manual_seed(0)
    return RefCLIPTextEncoder(context_length=context_length,
                              config=TINY_TEXT, **kw)


def tiny_head(**kw):
    cfg = dict(in_channels=32, channels=16, sent_channels=48, num_layers=1,
               num_heads=2, ffn_channels=64, loss_decode=BCE)
    cfg.update(kw)
    return CRISHead(**cfg)


def tiny_model():
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='RefSegmentor',
        data_preprocessor=dict(type='RefDataPreProcessor', mean=[0, 0, 0],
                               std=[1, 1, 1], seg_pad_val=0),
        backbone=dict(type='CLIPResNet', **TINY_RN),
        text_encoder=dict(type='RefCLIPTextEncoder', context_length=8,
                          config=TINY_TEXT),
        fusion=dict(type='CRISFPN', in_channels=[64, 128, 48],
                    out_channels=[16, 32, 48]),
        decode_head=dict(type='CRISHead', in_channels=32, channels=16,
                         sent_channels=48, num_layers=1, num_heads=2,
                         ffn_channels=64, loss_decode=BCE),
        train_cfg=dict(), test_cfg=dict(mode='whole')))
    model.init_weights()
    randomize_bn(model)
    return model


def samples(tok, size=64, ori=(48, 64)):
    out = []
    g = torch.Generator().manual_seed(0)
    for t in tok:
        ds = SegDataSample(metainfo=dict(
            text_tokens=t, text_mask=(t != 0).long(), ori_shape=ori,
            img_shape=(size, size), pad_shape=(size, size),
            img_padding_size=(0, 0, 8, 8)))
        ds.gt_sem_seg = PixelData(
            data=torch.randint(0, 2, (1, size, size), generator=g))
        out.append(ds)
    return out


# --------------------------------------------------------------- backbone
def test_clip_resnet_levels():
    bb = CLIPResNet(**TINY_RN)
    bb.init_weights()
    c3, c4, c5 = bb(torch.randn(2, 3, 64, 96))
    assert c3.shape == (2, 64, 8, 12)  # 8w at stride 8
    assert c4.shape == (2, 128, 4, 6)  # 16w at stride 16
    assert c5.shape == (2, 48, 2, 3)  # output_dim at stride 32
    assert bb.out_channels == (64, 128, 48)
    assert bool((c5 >= 0).all())  # ReLU after the connect residual
    assert [len(getattr(bb, f'layer{i}')) for i in (1, 2, 3, 4)] == [1, 2,
                                                                      1, 1]
    with pytest.raises(ValueError, match='valid'):
        CLIPResNet(depth=34)
    with pytest.raises(ValueError, match='4 positive'):
        CLIPResNet(stage_blocks=(1, 1, 1), output_dim=8)


def _pool(embed=16, heads=2, out=16, spacial=2):
    torch.manual_seed(0)
    pool = DenseAttentionPool2d(spacial, embed, heads, out).eval()
    randomize_bn(pool)
    return pool


def test_dense_attnpool_pos_embed_is_resized():
    pool = _pool(spacial=3)
    grid = pool.positional_embedding.data[1:]  # (9, C), row 0 unused
    torch.testing.assert_close(pool.resized_pos_embed(3, 3), grid)
    # Bicubic resizing keeps a constant grid constant, at any size.
    pool.positional_embedding.data[1:] = torch.arange(16.)
    pool.positional_embedding.data[0] = 1e3  # the pooled-token row
    resized = pool.resized_pos_embed(5, 7)
    assert resized.shape == (35, 16)
    torch.testing.assert_close(resized, torch.arange(16.).expand(35, 16))
    # The forward uses it: other positional values change the output.
    x = torch.randn(2, 16, 5, 7)
    before = pool(x)
    pool.positional_embedding.data[1:] = torch.randn(9, 16)
    assert before.shape == (2, 16, 5, 7)
    assert not torch.allclose(before, pool(x))


def test_dense_attnpool_matches_torch_mha_plus_connect():
    """Dense MHSA over all H*W tokens (no pooled token) with CLIP's
    separate q/k/v/c projections, + connect, then ReLU."""
    pool = _pool(embed=16, heads=2, out=16, spacial=2)
    x = torch.randn(2, 16, 3, 4)
    mha = nn.MultiheadAttention(16, 2).eval()
    mha.in_proj_weight.data = torch.cat(
        [pool.q_proj.weight, pool.k_proj.weight, pool.v_proj.weight])
    mha.in_proj_bias.data = torch.cat(
        [pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias])
    mha.out_proj.load_state_dict(pool.c_proj.state_dict())
    seq = x.flatten(2).permute(2, 0, 1) + pool.resized_pos_embed(3, 4)[:,
                                                                      None]
    attn = mha(seq, seq, seq)[0].permute(1, 2, 0).reshape(2, 16, 3, 4)
    expected = F.relu(attn + pool.connect(x))
    with torch.no_grad():
        torch.testing.assert_close(pool(x), expected)


def test_dense_attnpool_relu_after_residual():
    pool = _pool(embed=8, heads=2, out=4)
    with torch.no_grad():
        pool.c_proj.weight.zero_()
        pool.c_proj.bias.fill_(-1.0)  # attention branch = -1
        pool.connect[0].weight.zero_()
        pool.connect[1].bias.fill_(0.5)  # connect branch = +0.5
        pool.connect[1].running_mean.zero_()
        out = pool(torch.randn(1, 8, 2, 2))
    # relu(-1 + 0.5) = 0; relu(-1) + 0.5 would give 0.5.
    assert torch.equal(out, torch.zeros_like(out))


# ------------------------------------------------------------------- text
def test_clip_text_encoder_outputs_and_eot():
    enc = tiny_text().eval()
    tok = tokens(5, 3)
    with torch.no_grad():
        out = enc(tok)
    assert isinstance(out, TextFeatures)
    assert out.word_feats.shape == (2, 8, 32)
    assert out.sent_feat.shape == (2, 48)
    assert out.pad_mask.tolist() == [[False] * 5 + [True] * 3,
                                     [False] * 3 + [True] * 5]
    eot = (tok == EOT).nonzero()[:, 1]  # positions 4 and 2
    assert eot.tolist() == [4, 2]
    expected = out.word_feats[torch.arange(2), eot] @ \
        enc.clip.text_projection.weight.t()
    torch.testing.assert_close(out.sent_feat, expected)
    # Causal: tokens after EOT do not change the sentence feature, one
    # before it does.
    after, before = tok.clone(), tok.clone()
    after[:, -1] = 1234
    before[:, 1] = 999
    with torch.no_grad():
        torch.testing.assert_close(enc(after).sent_feat, out.sent_feat)
        assert not torch.allclose(enc(before).sent_feat, out.sent_feat)


def test_clip_text_encoder_first_positions_and_causal_mask():
    """L = 8 tokens give the same features as the first 8 of 12 tokens:
    positions are the first L rows and the mask is causal L x L."""
    short, long = tiny_text(8).eval(), tiny_text(12).eval()
    long.load_state_dict(short.state_dict())
    tok = tokens(6, total=12)
    tok[0, 8:] = torch.tensor([5, 6, 7, 8])  # differ after position 8
    with torch.no_grad():
        a = short(tok[:, :8]).word_feats
        b = long(tok).word_feats[:, :8]
    torch.testing.assert_close(a, b)
    pos = short.clip.text_model.embeddings.position_embedding.weight
    assert pos.shape == (77, 32)  # full table kept for OpenAI weights


def test_clip_text_encoder_frozen_and_errors():
    enc = tiny_text(frozen=True).train()
    assert not enc.clip.training
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc(tokens(4)).sent_feat.requires_grad
    with pytest.raises(ValueError, match=r'\[2, 77\]'):
        RefCLIPTextEncoder(context_length=78, config=TINY_TEXT)
    with pytest.raises(ValueError, match='pretrained'):
        RefCLIPTextEncoder()


def test_tokenizer_longer_than_text_encoder_is_a_clear_error():
    enc = tiny_text(17)
    tok = TokenizeText('clip', 22)(dict(text='the red circle'))
    ids = torch.as_tensor(tok['text_tokens'])[None]  # (1, 22)
    with pytest.raises(ValueError, match='context_length=17'):
        enc(ids)


# ------------------------------------------------------------------- neck
def _text(b=2, L=8, c_word=32, c_sent=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    pad = torch.zeros(b, L, dtype=torch.bool)
    pad[:, 5:] = True
    return TextFeatures(torch.randn(b, L, c_word, generator=g),
                        torch.randn(b, c_sent, generator=g), pad)


def test_cris_fpn_shapes_and_text_gate():
    fpn = CRISFPN(in_channels=(16, 24, 32), out_channels=(8, 12, 20),
                  text_channels=48).eval()
    randomize_bn(fpn)
    vis = [torch.randn(2, 16, 16, 16), torch.randn(2, 24, 8, 8),
           torch.randn(2, 32, 4, 4)]
    text = _text()
    with torch.no_grad():
        (out, ), passed = fpn(vis, text)
        (other, ), _ = fpn(vis, _text(seed=1))
        # Sizes that do not divide by 2 (e.g. 200 px: 25 / 12 / 6).
        (odd, ), _ = fpn([torch.randn(2, 16, 25, 25),
                          torch.randn(2, 24, 12, 12),
                          torch.randn(2, 32, 6, 6)], text)
    assert out.shape == (2, 12, 8, 8) and odd.shape == (2, 12, 12, 12)
    assert passed is text
    assert not torch.allclose(out, other)  # the sentence gates f5
    with pytest.raises(ValueError, match='3 visual levels'):
        fpn(vis[:2], text)
    with pytest.raises(ValueError, match='text_channels'):
        fpn(vis, _text(c_sent=7))
    with pytest.raises(ValueError, match='3 in_channels'):
        CRISFPN(in_channels=(1, 2), out_channels=(1, 2, 3))


# ---------------------------------------------------------------- decoder
def test_sine_positional_encodings():
    d, h, w = 8, 3, 4
    pe = sine_pos_2d(h, w, d)
    assert pe.shape == (h * w, d)
    half = d // 2
    for y in range(h):
        for x in range(w):
            for k in range(half // 2):
                f = 10000**(-2 * k / half)
                row = pe[y * w + x]
                assert row[2 * k] == pytest.approx(math.sin(x * f), abs=1e-6)
                assert row[2 * k + 1] == pytest.approx(math.cos(x * f),
                                                       abs=1e-6)
                assert row[half + 2 * k] == pytest.approx(
                    math.sin(y * f), abs=1e-6)
                assert row[half + 2 * k + 1] == pytest.approx(
                    math.cos(y * f), abs=1e-6)
    pe1 = sine_pos_1d(5, 6)
    assert pe1[3, 2] == pytest.approx(math.sin(3 * 10000**(-2 / 6)))
    assert pe1[3, 5] == pytest.approx(math.cos(3 * 10000**(-4 / 6)))
    with pytest.raises(ValueError, match='dim % 4'):
        sine_pos_2d(2, 2, 6)


def test_vl_decoder_masks_padding_words():
    dec = VLTransformerDecoder(num_layers=2, dim=32, num_heads=2,
                               ffn_dim=64).eval()
    vis = torch.randn(2, 32, 4, 5)
    text = _text()
    words = text.word_feats.clone()
    words[:, 6] += 10.0  # a padding position (pad_mask[:, 5:])
    real = text.word_feats.clone()
    real[:, 1] += 10.0  # a real word
    with torch.no_grad():
        out = dec(vis, text.word_feats, text.pad_mask)
        torch.testing.assert_close(dec(vis, words, text.pad_mask), out)
        assert not torch.allclose(dec(vis, real, text.pad_mask), out)
    assert out.shape == (2, 32, 4, 5)
    with pytest.raises(ValueError, match='word width'):
        dec(vis, torch.randn(2, 8, 16), text.pad_mask)


# ------------------------------------------------------------------- head
def test_cris_head_logits_and_dynamic_kernel():
    head = tiny_head().eval()
    randomize_bn(head)
    x, text = torch.randn(2, 32, 4, 5), _text()
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
    x, text = torch.randn(2, 32, 4, 4), _text()
    ds = samples(tokens(5, 3))  # gt 64 x 64, logits 16 x 16
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


def test_full_size_configs_build_with_clip_sizes():
    """Full CRIS RN50 / RN101 from the configs: the connect residual
    (2,099,200 / 1,049,600) and CLIP (~102.0M / ~119.7M, ris_methods.md
    2.1 and 2.6) around the 42.74M / 40.51M head."""
    expected = {
        'cris_r50_8xb8-50e_refcoco-416x416.py': (2_099_200, 102.0e6),
        'cris_r101_8xb8-50e_refcoco-416x416.py': (1_049_600, 119.7e6),
    }
    for name, (connect, clip) in expected.items():
        model = MODELS.build(Config.fromfile(osp.join(CRIS_CFG, name)).model)
        c = n_params(model.backbone.attnpool.connect)
        clip_params = (n_params(model.backbone) - c +
                       n_params(model.text_encoder))
        assert c == connect
        assert abs(clip_params - clip) < 0.05e6, clip_params


def test_cris_configs_data_and_optimizer():
    from mmengine.optim import build_optim_wrapper
    lengths = {'refcoco': 17, 'refcoco+': 17, 'refcocog-umd': 22}
    for arch in ('r50', 'r101'):
        for ds, length in lengths.items():
            cfg = Config.fromfile(
                osp.join(CRIS_CFG, f'cris_{arch}_8xb8-50e_{ds}-416x416.py'))
            toks = [t for t in cfg.train_dataloader.dataset.pipeline +
                    cfg.test_dataloader.dataset.pipeline
                    if t.type == 'TokenizeText']
            assert {(t.tokenizer, t.context_length) for t in toks} == {
                ('clip', length)}
            assert cfg.model.text_encoder.context_length == length
            assert cfg.test_evaluator.threshold == 0.35
            assert cfg.test_evaluator.pr_op == '>'
            assert cfg.val_dataloader.dataset.split == 'val'
            assert cfg.param_scheduler[0].milestones == [35]
            assert cfg.train_cfg.max_epochs == 50
    cfg = Config.fromfile(
        osp.join(CRIS_CFG, 'cris_r50_8xb8-50e_refcoco-416x416.py'))
    model = tiny_model()  # same module names as the full model
    optim = dict(cfg.optim_wrapper, type='OptimWrapper')
    optim.pop('loss_scale')
    wrapper = build_optim_wrapper(model, optim)
    names = {id(p): n for n, p in model.named_parameters()}
    lr = {names[id(p)]: g['lr'] for g in wrapper.optimizer.param_groups
          for p in g['params']}
    assert lr['backbone.layer1.0.conv1.weight'] == pytest.approx(1e-5)
    assert lr['text_encoder.clip.text_projection.weight'] == pytest.approx(
        1e-5)
    assert lr['backbone.attnpool.positional_embedding'] == pytest.approx(
        1e-4)
    assert lr['text_encoder.clip.text_model.embeddings.'
              'position_embedding.weight'] == pytest.approx(1e-4)
    assert lr['decode_head.projector.txt.weight'] == pytest.approx(1e-4)
    assert lr['fusion.text_proj.0.weight'] == pytest.approx(1e-4)


# -------------------------------------------------------------- converter
def test_converter_round_trip_through_openai_layout():
    conv = load_converter()
    model = tiny_model().eval()
    state = model.state_dict()
    openai = conv.to_openai(state)
    # The OpenAI layout (clip/model.py names and shapes).
    assert openai['transformer.resblocks.1.attn.in_proj_weight'].shape == (
        96, 32)
    assert openai['transformer.resblocks.0.attn.in_proj_bias'].shape == (
        96, )
    assert openai['text_projection'].shape == (32, 48)  # x @ P
    assert openai['positional_embedding'].shape == (77, 32)
    for key in ('visual.conv1.weight', 'visual.layer1.0.downsample.0.weight',
                'visual.attnpool.positional_embedding',
                'visual.attnpool.q_proj.weight', 'visual.attnpool.c_proj.bias',
                'token_embedding.weight', 'ln_final.weight',
                'transformer.resblocks.1.mlp.c_fc.weight',
                'transformer.resblocks.1.ln_2.bias'):
        assert key in openai, key
    assert not [k for k in openai if 'connect' in k]
    # q / k / v packed in that order.
    torch.testing.assert_close(
        openai['transformer.resblocks.0.attn.in_proj_weight'][32:64],
        state['text_encoder.clip.text_model.encoder.layers.0.self_attn.'
              'k_proj.weight'])
    openai = {k: v.half() if v.is_floating_point() else v
              for k, v in openai.items()}  # OpenAI ships fp16
    openai.update(logit_scale=torch.tensor(4.6), input_resolution=224)
    converted = conv.convert_clip(openai)
    clip_keys = {k for k in state if k.startswith(
        ('backbone.', 'text_encoder.')) and '.connect.' not in k}
    assert set(converted) == clip_keys
    assert all(v.dtype != torch.float16 for v in converted.values())
    fresh = tiny_model()
    torch.manual_seed(123)
    for p in fresh.parameters():
        nn.init.normal_(p)
    rest = {k: v for k, v in state.items() if k not in converted}
    load_state_dict_strict(fresh, {**rest, **converted}, 'round trip')
    # fp16 storage loses precision; compare with the fp16-rounded model.
    model.load_state_dict({k: v.half().float() if k in converted and
                           v.is_floating_point() else v
                           for k, v in state.items()})
    fresh.eval()
    img = torch.randn(2, 3, 64, 64)
    ds = samples(tokens(6, 4))
    with torch.no_grad():
        torch.testing.assert_close(fresh(img, *text_of(ds)),
                                   model(img, *text_of(ds)))


def test_converter_inputs_and_errors(tmp_path):
    conv = load_converter()
    scripted = torch.jit.trace(nn.Linear(3, 2), torch.randn(1, 3))
    path = str(tmp_path / 'scripted.pt')
    scripted.save(path)
    assert set(conv.load_openai(path)) == {'weight', 'bias'}
    plain = str(tmp_path / 'plain.pth')
    torch.save({'state_dict': {'a': torch.ones(1)}}, plain)
    assert set(conv.load_openai(plain)) == {'a'}
    with pytest.raises(ValueError, match='ViT'):
        conv.convert_clip({'visual.class_embedding': torch.zeros(4)})
    with pytest.raises(KeyError, match='no CLIP conversion rule'):
        conv.convert_clip({
            'visual.attnpool.positional_embedding': torch.zeros(2, 2),
            'mystery.weight': torch.zeros(1)
        })


def test_converter_checks_against_config(tmp_path):
    # the demo's CLIP ResNet with a tiny CLIP text tower
    cfg_path = str(tmp_path / 'tiny_clip.py')
    with open(cfg_path, 'w') as f:
        f.write(f"_base_ = ['{DEMO_CFG}']\n"
                'model = dict(text_encoder=dict(_delete_=True, '
                f"type='RefCLIPTextEncoder', config={TINY_TEXT!r}, "
                'context_length=17), fusion=dict(text_channels=48), '
                'decode_head=dict(sent_channels=48, text_channels=32))\n')
    conv = load_converter()
    model = MODELS.build(Config.fromfile(cfg_path).model)
    converted = conv.convert_clip(conv.to_openai(model.state_dict()))
    conv.check_against_config(converted, cfg_path)  # no error
    converted['backbone.conv1.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match='shape mismatch'):
        conv.check_against_config(converted, cfg_path)
    converted.pop('backbone.conv1.weight')
    with pytest.raises(KeyError, match='missing'):
        conv.check_against_config(converted, cfg_path)


# ------------------------------------------------------------------- demo
def test_demo_config_trains_and_predicts_on_refshapes(refshapes_root):
    cfg = Config.fromfile(DEMO_CFG)
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.update(data_root=refshapes_root, indices=2)
    dataset = DATASETS.build(dataset_cfg)
    batch = pseudo_collate([dataset[0], dataset[1]])
    assert batch['data_samples'][0].text_tokens.shape == (20, )
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    data = model.data_preprocessor(batch, True)
    assert data['inputs'].shape == (2, 3, 160, 160)
    losses = model(**data, mode='loss')
    assert set(losses) == {
        'decode.loss_ce', 'decode.loss_dice', 'decode.acc_seg'
    }
    (losses['decode.loss_ce'] + losses['decode.loss_dice']).backward()
    assert model.backbone.attnpool.connect[0].weight.grad is not None
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert model(**data, mode='tensor').shape == (2, 1, 40, 40)
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(batch, False),
                      mode='predict')
    ori = batch['data_samples'][0].ori_shape
    assert preds[0].pred_sem_seg.data.shape == (1, *ori)


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
