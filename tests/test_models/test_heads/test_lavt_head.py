"""LAVTHead."""
import copy
import os.path as osp
from typing import Dict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.models import LAVTHead
from ris_plugins.utils.synthetic import input_size, tokenize

from ...conftest import (ROOT, assert_same_step, leaf, saved_bytes, step,
                         with_cp_copy)


def test_lavt_head_shapes():
    head = LAVTHead(in_channels=[16, 32, 64, 128], channels=32,
                    num_classes=2)
    feats = [torch.randn(2, c, s, s) for c, s in ((16, 16), (32, 8),
                                                  (64, 4), (128, 2))]
    assert head(feats).shape == (2, 2, 16, 16)
    # Top-down by hand (LAVT lib/segmentation.py SimpleDecoding): Y = F_4,
    # then Y = fuse_k(cat[bilinear_align_corners(Y), F_i]) for F_3, F_2,
    # F_1, then the 1x1 classifier.
    torch.manual_seed(0)
    for m in head.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
    head.eval()
    with torch.no_grad():
        y = feats[3]
        for skip, fuse in zip((feats[2], feats[1], feats[0]), head.fuse):
            y = F.interpolate(y, size=skip.shape[-2:], mode='bilinear',
                              align_corners=True)
            y = fuse(torch.cat([y, skip], dim=1))
        want = head.conv_seg(y)
        torch.testing.assert_close(head(feats), want)
    with pytest.raises(ValueError, match='4 input widths'):
        LAVTHead(in_channels=[16, 32], channels=8, num_classes=2)


# -------------------------------------------------- with_cp switch
# (moved from tests/test_models/test_head_checkpointing.py)
LAVT_DEMO = osp.join(ROOT, 'configs', 'demo',
                     'lavt-small_swin-32-minilm_1xb16-1500i_refshapes-'
                     '160x160.py')
WIDTHS = [4, 8, 16, 32]  # F_1..F_4 of the tiny LAVTHead


def lavt_head() -> LAVTHead:
    torch.manual_seed(0)
    head = LAVTHead(WIDTHS, 8, num_classes=2)
    for m in head.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    return head


def lavt_inputs():
    return tuple(
        leaf(2, c, 32 // 2**i, 24 // 2**i, seed=i)
        for i, c in enumerate(WIDTHS))


def lavt_forward(head, *feats):
    return head(feats)


def norm_stats(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in module.named_buffers()
            if 'running' in n or 'num_batches' in n}


def test_lavt_head_with_cp_same_outputs_grads_and_bn_stats(
        checkpoint_calls):
    head = lavt_head()
    assert head.with_cp is False
    ref = step(head, lavt_inputs, lavt_forward)
    assert not checkpoint_calls
    head_cp = with_cp_copy(lavt_head())
    got = step(head_cp, lavt_inputs, lavt_forward)
    assert len(checkpoint_calls) == 3  # one per fusion level
    assert_same_step(ref, got)
    # Running statistics updated once, as without checkpointing (the
    # recomputation in backward would update them a second time).
    stats, stats_cp = norm_stats(head), norm_stats(head_cp)
    assert stats.keys() == stats_cp.keys() and len(stats) == 3 * 2 * 3
    assert all(stats[k].ne(norm_stats(lavt_head())[k]).any() for k in stats)
    for name in stats:
        assert torch.equal(stats[name], stats_cp[name]), name


def test_lavt_head_with_cp_off_without_autograd(checkpoint_calls):
    head = with_cp_copy(lavt_head())
    with torch.no_grad():
        head.train()(lavt_inputs())
        head.eval()(lavt_inputs())
    assert not checkpoint_calls


def test_lavt_head_with_cp_keeps_fewer_activations():
    plain = saved_bytes(lavt_head(), lavt_inputs, lavt_forward)
    kept = saved_bytes(with_cp_copy(lavt_head()), lavt_inputs, lavt_forward)
    assert kept < 0.5 * plain, (kept, plain)


def test_lavt_demo_model_decoder_with_cp():
    """The LAVT demo model with ``model.decode_head.with_cp=True``: the
    same logits and gradients in training mode (drop path, BN batch
    statistics) as the default."""
    cfg = Config.fromfile(LAVT_DEMO)
    cfg.merge_from_dict({'model.decode_head.with_cp': True})
    assert MODELS.build(cfg.model).decode_head.with_cp
    cfg.merge_from_dict({'model.decode_head.with_cp': False})
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model_cp = copy.deepcopy(model)
    model_cp.decode_head.with_cp = True
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 3, *input_size(cfg), generator=g)
    texts = [tokenize(cfg, s) for s in ('the red circle',
                                        'the big blue square on the left')]
    tokens = torch.stack([t['text_tokens'] for t in texts])
    mask = torch.stack([t['text_mask'] for t in texts])

    def forward(m, img):
        return m(img, tokens, mask)

    img_leaf = lambda: (img.clone().requires_grad_(), )  # noqa: E731
    assert_same_step(step(model, img_leaf, forward),
                     step(model_cp, img_leaf, forward))
