"""Mix-and-match configs (configs/mix/): components of different methods
chained from config alone through the generic FeatureAdapter glue; the
tiny RefShapes variants train a few iterations with the Runner (the loss
falls while fitting two samples) and test.
Also: FeatureAdapter against hand-computed values, RefSegmentor's
build-time width check and its parameter table at start-up."""
import glob
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg.registry import MODELS
from ris_plugins.models.necks import FeatureAdapter
from ris_plugins.models.utils import TextFeatures, check_widths

from ..conftest import ROOT, run_cfg

MIX = sorted(glob.glob(osp.join(ROOT, 'configs', 'mix', '*.py')))
TINY = [p for p in MIX if 'refshapes' in osp.basename(p)]
FULL = [p for p in MIX if 'refshapes' not in osp.basename(p)]

# What each full-size mix must combine: (backbone, fusion, neck, head).
COMBOS = {
    'mix_hla-cris-head': ('CLIPResNet', 'HierarchicalHLA',
                          'FeatureAdapter', 'CRISHead'),
    'mix_barleria-snf-lim_query-head': ('DualEncoderBackbone',
                                        'FeatureAdapter', None,
                                        'QueryMaskHead'),
    'mix_lavt-pwam_query-head': ('MultiModalSwin', 'FeatureAdapter', None,
                                 'QueryMaskHead'),
}


def _type(cfg, key):
    part = cfg.model.get(key)
    return None if part is None else part['type']


def test_three_mixes_each_with_a_tiny_variant():
    assert len(FULL) >= 3 and len(TINY) == len(FULL)
    for prefix in COMBOS:
        assert any(osp.basename(p).startswith(prefix) for p in FULL), prefix
        tiny = prefix.replace('mix_', 'mix-small_')
        assert any(osp.basename(p).startswith(tiny) for p in TINY), tiny


@pytest.mark.parametrize('path', FULL + TINY, ids=osp.basename)
def test_mix_combines_the_named_components(path):
    cfg = Config.fromfile(path)
    name = osp.basename(path).replace('mix-small_', 'mix_')
    (prefix, want), = [(k, v) for k, v in COMBOS.items()
                       if name.startswith(k)]
    got = tuple(_type(cfg, k)
                for k in ('backbone', 'fusion', 'neck', 'decode_head'))
    assert got == want
    if prefix == 'mix_barleria-snf-lim_query-head':
        bb = cfg.model.backbone
        assert bb.shortcuts.type == 'SNF' and bb.side_net is None
        assert [i.module.type for i in bb.interactions] == ['LIMPrompts']


@pytest.mark.slow
@pytest.mark.parametrize('path', TINY, ids=osp.basename)
def test_tiny_mix_trains_and_tests(path, refshapes_root, tmp_path):
    work = str(tmp_path / 'work')
    cfg = run_cfg(path, refshapes_root, work, max_iters=12, batch_size=2)
    train = cfg.train_dataloader.dataset
    train.update(indices=2, sentence_mode='first')  # fit two samples
    train.pipeline = [t for t in train.pipeline
                      if t.type != 'RefRandomFlip']
    cfg.test_dataloader.dataset.indices = 4
    cfg.optim_wrapper.optimizer.lr = 1e-3
    runner = Runner.from_cfg(cfg)
    runner.train()
    losses = runner.message_hub.get_scalar('train/loss').data[0]
    assert len(losses) == 12 and all(math.isfinite(x) for x in losses)
    assert losses[-3:].mean() < 0.9 * losses[:3].mean(), losses
    metrics = runner.test()
    assert {'oIoU', 'mIoU', 'Pr@0.5'} <= set(metrics), metrics
    assert all(0.0 <= metrics[k] <= 100.0 for k in ('oIoU', 'mIoU'))
    log = open(glob.glob(osp.join(work, '*', '*.log'))[0]).read()
    assert 'Parameters by top-level module' in log
    assert 'RefSegmentor:' in log and 'trainable' in log


# ----------------------------------------------------------- FeatureAdapter
def _text(b=2, t=3, cw=5, cs=4):
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[:, -1] = True
    return TextFeatures(torch.randn(b, t, cw), torch.randn(b, cs), pad)


def test_adapter_resize_sum_by_hand():
    """Levels 4x4 and 2x2, no projection, resized to the 2x2 grid and
    summed: the 4x4 level is average-pooled in 2x2 blocks."""
    a = torch.arange(16.).reshape(1, 1, 4, 4)
    b = torch.full((1, 1, 2, 2), 10.)
    adapter = FeatureAdapter(in_channels=[1, 1], resize_to=1, merge='sum')
    (out, ), text = adapter([a, b], None)
    assert text is None
    want = torch.tensor([[2.5, 4.5], [10.5, 12.5]]) + 10.
    torch.testing.assert_close(out[0, 0], want)
    assert adapter.out_channels == 1


def test_adapter_projection_and_text_by_hand():
    adapter = FeatureAdapter(in_channels=[2, 3], out_channels=4,
                             merge='cat', text_channels=5,
                             text_out_channels=6, sent_channels=4,
                             sent_out_channels=2)
    assert adapter.out_channels == 8
    x = [torch.randn(2, 2, 3, 3), torch.randn(2, 3, 3, 3)]
    text = _text()
    (out, ), txt = adapter(x, text)
    conv0 = adapter.projs[0].conv
    want0 = torch.einsum('oc,bchw->bohw', conv0.weight[:, :, 0, 0],
                         x[0]) + conv0.bias[None, :, None, None]
    torch.testing.assert_close(out[:, :4], want0)
    assert out.shape == (2, 8, 3, 3)
    lin = adapter.word_proj
    torch.testing.assert_close(txt.word_feats,
                               text.word_feats @ lin.weight.T + lin.bias)
    assert txt.sent_feat.shape == (2, 2)
    assert torch.equal(txt.pad_mask, text.pad_mask)


def test_adapter_scale_and_select():
    """in_index picks a level, scale_factor 2 upsamples bilinearly; the
    text passes unchanged."""
    adapter = FeatureAdapter(in_channels=[3, 2], in_index=-1,
                             scale_factor=2.0)
    text = _text()
    x = torch.ones(2, 2, 3, 3)
    (out, ), txt = adapter((torch.zeros(2, 3, 5, 5), x), text)
    torch.testing.assert_close(out, torch.ones(2, 2, 6, 6))
    assert torch.equal(txt.word_feats, text.word_feats)
    assert adapter.out_channels == 2


@pytest.mark.parametrize('kwargs, match', [
    (dict(in_channels=[4, 8], merge='sum'), 'equal widths'),
    (dict(in_channels=[4], merge='max'), "valid: \\('none', 'sum', 'cat'\\)"),
    (dict(in_channels=[4, 4], in_index=2), 'in_index 2 is outside'),
    (dict(in_channels=[4, 4], out_channels=[8]), '1 entries for 2'),
    (dict(in_channels=[4], resize_to=1), 'resize_to=1'),
    (dict(in_channels=[4], text_out_channels=8), 'needs text_channels'),
    (dict(in_channels=[0]), 'positive int'),
])
def test_adapter_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureAdapter(**kwargs)


def test_adapter_bad_input():
    adapter = FeatureAdapter(in_channels=[4, 4], merge='sum',
                             text_channels=5, text_out_channels=4)
    with pytest.raises(ValueError, match=r'widths \[4, 4\], got \[4, 3\]'):
        adapter([torch.ones(1, 4, 2, 2), torch.ones(1, 3, 2, 2)], None)
    with pytest.raises(ValueError, match='set resize_to'):
        adapter([torch.ones(1, 4, 2, 2), torch.ones(1, 4, 4, 4)], None)
    with pytest.raises(ValueError, match='word width 5, got 7'):
        adapter([torch.ones(2, 4, 2, 2)] * 2, _text(cw=7))


# ----------------------------------------------------- RefSegmentor checks
class _Box(nn.Module):

    def __init__(self, **attrs):
        super().__init__()
        self.__dict__.update(attrs)


@pytest.mark.parametrize('out, dst, ok', [
    (256, dict(in_channels=256, in_index=-1), True),
    (256, dict(in_channels=128, in_index=-1), False),
    ([64, 128], dict(in_channels=128, in_index=1), True),
    ([64, 128], dict(in_channels=128, in_index=0), False),
    ([64, 64], dict(in_channels=[64, 64], in_index=[0, 1]), True),
    ([32, 64], dict(in_channels=96, in_index=[0, 1],
                    input_transform='resize_concat'), True),
    (64, dict(in_channels=[64, 64, 64]), True),  # neck: FPN-like
    ([64, 32], dict(in_channels=[64, 64]), False),
    (64, dict(), True),  # nothing to compare
])
def test_check_widths_rules(out, dst, ok):
    src, head = _Box(out_channels=out), _Box(**dst)
    if ok:
        check_widths('fusion', src, 'decode_head', head)
    else:
        with pytest.raises(ValueError, match='fusion _Box hands on'):
            check_widths('fusion', src, 'decode_head', head)


def test_segmentor_width_mismatch_is_a_build_error():
    tiny = [p for p in TINY if 'barleria' in p][0]
    cfg = Config.fromfile(tiny)
    cfg.model.decode_head.in_channels = 32
    with pytest.raises(ValueError) as err:
        MODELS.build(cfg.model)
    msg = str(err.value)
    for part in ('fusion FeatureAdapter', 'out_channels=64',
                 'decode_head QueryMaskHead', 'in_channels=32'):
        assert part in msg, msg
    # HARIS: fusion width vs query width.
    cfg = Config.fromfile(tiny)
    cfg.model.fusion = dict(type='HierarchicalHLA', in_channels=[64] * 3,
                            text_channels=64, sent_channels=64,
                            embed_dims=48)
    with pytest.raises(ValueError, match='HierarchicalHLA hands on width'
                       r'\(s\) 48 .* QueryMaskHead expects in_channels=64'):
        MODELS.build(cfg.model)
