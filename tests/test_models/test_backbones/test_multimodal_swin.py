"""MultiModalSwin (LAVT's Swin with PWAMs): outputs, the base config's small-
map padding and the full-size LAVT parameter counts."""
import pytest
import torch

from mmseg.registry import MODELS
from ris_plugins.models import (BertTextEncoder, LAVTHead, MultiModalSwin,
                                TextFeatures)

from ...conftest import TINY_SWIN, text


def test_multimodal_swin_outputs():
    swin = MultiModalSwin(text_channels=32, **TINY_SWIN).eval()
    outs = swin(torch.randn(2, 3, 64, 64), text())
    assert [tuple(o.shape) for o in outs] == [(2, 16, 16, 16),
                                             (2, 32, 8, 8), (2, 64, 4, 4),
                                             (2, 128, 2, 2)]
    # Values: the PWAMs read the real words only. Changing the padded
    # words' features (last 2 positions) leaves every stage unchanged;
    # changing one real word changes every stage's output.
    torch.manual_seed(0)
    img, t = torch.randn(2, 3, 64, 64), text()
    padded, real = t.word_feats.clone(), t.word_feats.clone()
    padded[:, -2:] = torch.randn(2, 2, 32) * 10
    real[:, 1] += 1.0
    with torch.no_grad():
        ref = swin(img, t)
        same = swin(img, TextFeatures(padded, t.sent_feat, t.pad_mask))
        other = swin(img, TextFeatures(real, t.sent_feat, t.pad_mask))
    for r, s, o in zip(ref, same, other):
        torch.testing.assert_close(s, r)
        assert (o - r).abs().max() > 1e-4
    with pytest.raises(ValueError, match='one per stage'):
        MultiModalSwin(pwam_heads=(1, 1), **TINY_SWIN)


@pytest.mark.slow
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
