"""LAVT: PWAM, MultiModalSwin, LAVTHead, BERT partial training and the
checkpoint converter."""
import pytest
import torch

from mmseg.registry import MODELS
from ris_plugins.models import (PWAM, BertTextEncoder, LAVTHead,
                                MultiModalSwin, TextFeatures)
from ris_plugins.utils.state_dict import load_state_dict_strict

from ..conftest import TINY_BERT, load_tool, text_of
from .test_ref_segmentor import samples

TINY_SWIN = dict(
    arch=dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4]),
    window_size=2, out_indices=(0, 1, 2, 3))


def converter():
    return load_tool('model_converters/lavt_to_ris.py')


def text(b=2, length=6, c=32, pad=2):
    mask = torch.zeros(b, length, dtype=torch.bool)
    mask[:, length - pad:] = True
    return TextFeatures(torch.randn(b, length, c), torch.randn(b, c), mask)


def tiny_lavt():
    model = MODELS.build(dict(
        type='RefSegmentor',
        data_preprocessor=dict(type='RefDataPreProcessor', mean=[0] * 3,
                               std=[1] * 3),
        backbone=dict(type='MultiModalSwin', text_channels=32, **TINY_SWIN),
        text_encoder=dict(type='BertTextEncoder', config=TINY_BERT,
                          sentence_pooling='cls'),
        decode_head=dict(
            type='LAVTHead', in_channels=[16, 32, 64, 128], channels=32,
            num_classes=2,
            loss_decode=dict(type='CrossEntropyLoss',
                             class_weight=[0.9, 1.1])),
        train_cfg=dict(), test_cfg=dict(mode='whole')))
    model.init_weights()
    return model.eval()


def test_pwam_shapes_gate_and_padding():
    pwam = PWAM(8, text_channels=32, num_heads=2).eval()
    x = torch.randn(2, 12, 8)
    t = text()
    fused, gated = pwam(x, t)
    assert fused.shape == gated.shape == (2, 12, 8)
    torch.testing.assert_close(
        gated, x + pwam.res_gate(fused) * fused)
    # padded words must not matter
    t2 = TextFeatures(t.word_feats.clone(), t.sent_feat, t.pad_mask)
    t2.word_feats[:, -2:] = 100.0
    torch.testing.assert_close(pwam(x, t2)[0], fused)
    with pytest.raises(ValueError, match='divisible'):
        PWAM(10, num_heads=3)


def test_multimodal_swin_outputs():
    swin = MultiModalSwin(text_channels=32, **TINY_SWIN).eval()
    outs = swin(torch.randn(2, 3, 64, 64), text())
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 16),
                                             (2, 32, 8, 8), (2, 64, 4, 4),
                                             (2, 128, 2, 2)]
    with pytest.raises(ValueError, match='one per stage'):
        MultiModalSwin(pwam_heads=(1, 1), **TINY_SWIN)


def test_lavt_head_shapes():
    head = LAVTHead(in_channels=[16, 32, 64, 128], channels=32,
                    num_classes=2)
    feats = [torch.randn(2, c, s, s) for c, s in ((16, 16), (32, 8),
                                                  (64, 4), (128, 2))]
    assert head(feats).shape == (2, 2, 16, 16)
    with pytest.raises(ValueError, match='4 input widths'):
        LAVTHead(in_channels=[16, 32], channels=8, num_classes=2)


def test_full_size_parameter_counts():
    """ris_methods.md 1.5, confirmed there against the official model."""
    swin = MultiModalSwin(arch='base', window_size=12, img_size=480,
                          out_indices=(0, 1, 2, 3))
    n_swin = sum(p.numel() for p in swin.parameters())
    n_pwam = sum(p.numel() for p in swin.pwams.parameters())
    assert n_swin == 98_196_856
    assert n_pwam == 11_316_480
    head = LAVTHead(in_channels=[128, 256, 512, 1024], channels=512,
                    num_classes=2)
    assert sum(p.numel() for p in head.parameters()) == 20_651_010
    bert = BertTextEncoder(
        config=dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, intermediate_size=3072),
        sentence_pooling='cls', trainable_layers=range(10))
    assert sum(p.numel() for p in bert.parameters()) == 108_891_648
    assert sum(p.numel() for p in bert.parameters()
               if p.requires_grad) == 70_878_720


def test_bert_trainable_layers():
    cfg = dict(TINY_BERT, num_hidden_layers=3)
    enc = BertTextEncoder(config=cfg, trainable_layers=[0, 1])
    trainable = {n.split('.')[1] + '.' + n.split('.')[3]
                 if '.layer.' in n else n.split('.')[1]
                 for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable == {'encoder.0', 'encoder.1'}
    with pytest.raises(ValueError, match='out of range'):
        BertTextEncoder(config=cfg, trainable_layers=[3])


def test_patch_merging_reorder_matches_swin_semantics():
    """Upstream Swin merges cat[x(0::2,0::2), x(1::2,0::2), x(0::2,1::2),
    x(1::2,1::2)]; the converted weights must give the same output through
    mmpretrain's Unfold-based PatchMerging."""
    conv = converter()
    swin = MultiModalSwin(text_channels=32, **TINY_SWIN).eval()
    merge = swin.stages[0].downsample
    c = 16
    w_up = torch.randn(2 * c, 4 * c)
    ln_w, ln_b = torch.randn(4 * c), torch.randn(4 * c)
    merge.reduction.weight.data = conv.merging_unfold_order(w_up)
    merge.norm.weight.data = conv.merging_unfold_order(ln_w)
    merge.norm.bias.data = conv.merging_unfold_order(ln_b)
    x = torch.randn(1, 4, 4, c)
    cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2],
                     x[:, 1::2, 1::2]], dim=-1)  # (1, 2, 2, 4C)
    ref = torch.nn.functional.layer_norm(cat, (4 * c, ), ln_w, ln_b) @ w_up.T
    out, _ = merge(x.reshape(1, 16, c), (4, 4))
    torch.testing.assert_close(out, ref.reshape(1, 4, 2 * c))
    torch.testing.assert_close(
        conv.merging_swin_order(conv.merging_unfold_order(w_up)), w_up)


def test_converter_round_trip_is_exact():
    conv = converter()
    model = tiny_lavt()
    upstream = conv.to_upstream_lavt_one(model.state_dict())
    keys = list(upstream['model'])
    assert any(k.startswith('backbone.layers.0.fusion.image_lang_att.')
               for k in keys)
    assert 'classifier.conv1_4.weight' in keys
    assert 'classifier.bn2_2.running_var' in keys
    assert 'backbone.layers.1.downsample.reduction.weight' in keys
    fresh = tiny_lavt()
    load_state_dict_strict(fresh, conv.convert_lavt(upstream))
    inputs = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(
            fresh(inputs, *text_of(samples(2))),
            model(inputs, *text_of(samples(2))))
    # the lavt (two-entry) layout with a DDP-prefixed BERT converts too
    bert = {k[len('text_encoder.'):]: v for k, v in upstream['model'].items()
            if k.startswith('text_encoder.')}
    two = {'model': {k: v for k, v in upstream['model'].items()
                     if not k.startswith('text_encoder.')},
           'bert_model': {'module.' + k: v for k, v in bert.items()}}
    assert conv.convert_lavt(two).keys() == conv.convert_lavt(
        upstream).keys()


def test_key_mismatch_is_reported_by_module():
    conv = converter()
    model = tiny_lavt()
    state = conv.convert_lavt(conv.to_upstream_lavt_one(model.state_dict()))
    del state['decode_head.conv_seg.weight']
    state['backbone.extra.weight'] = torch.zeros(1)
    with pytest.raises(KeyError) as err:
        load_state_dict_strict(model, state, 'lavt.pth')
    msg = str(err.value)
    assert 'missing in decode_head.conv_seg' in msg
    assert 'unexpected in backbone.extra' in msg
    with pytest.raises(KeyError, match='no conversion rule'):
        conv.convert_lavt({'model': {'backbone.layers.0.mystery.w': 1,
                                     'text_encoder.x': 1}})


def _lavt_base_swin(**overrides):
    """The LAVT base config's backbone (window 12, its pad_small_map) on a
    tiny width."""
    from mmengine.config import Config
    cfg = Config.fromfile('configs/_base_/models/lavt_swin-b.py')
    bb = dict(cfg.model.backbone, arch=TINY_SWIN['arch'], text_channels=32,
              drop_path_rate=0.0)
    bb.update(overrides)
    return MODELS.build(bb).eval()


def test_lavt_config_pads_small_maps_like_the_official_swin():
    # 192x192: the last map is 6x6, below the 12x12 window; official LAVT
    # pads it (mmpretrain without pad_small_map raises).
    torch.manual_seed(0)
    swin = _lavt_base_swin()
    t = text(b=1)
    with torch.no_grad():
        outs = swin(torch.randn(1, 3, 192, 192), t)
    assert outs[-1].shape == (1, 128, 6, 6)
    # 384x384: the last map is exactly one window; official LAVT keeps the
    # shifted blocks, so turning padding off must change stage 4.
    torch.manual_seed(0)
    unpadded = _lavt_base_swin(pad_small_map=False)
    unpadded.load_state_dict(swin.state_dict())
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad():
        padded_out, unpadded_out = swin(x, t), unpadded(x, t)
    torch.testing.assert_close(padded_out[2], unpadded_out[2])
    assert not torch.allclose(padded_out[3], unpadded_out[3], atol=1e-4)
