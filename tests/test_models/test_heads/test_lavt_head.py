"""LAVTHead."""
import pytest
import torch
import torch.nn.functional as F

from ris_plugins.models import LAVTHead


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
