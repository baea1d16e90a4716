"""Resize backends: cv2 (default) and pillow (LAVT's PIL resize in
``transforms.py``), checked against hand-computed pixels."""
import numpy as np
import pytest

from ris_plugins.datasets.transforms import Letterbox

# One row pattern [0, 0, 100, 100] (4 px) shrunk to 2 px wide:
# * cv2 INTER_LINEAR samples at (x + 0.5) * 2 - 0.5 = 0.5, 2.5:
#   (0 + 0) / 2 = 0 and (100 + 100) / 2 = 100;
# * PIL BILINEAR (antialiased triangle filter, support 1 * scale 2 = 2)
#   centred at 1.0 and 3.0: weights 0.75, 0.75, 0.25 over pixels 0, 1, 2
#   -> 25 / 1.75 = 14.29 -> 14, and 0.25, 0.75, 0.75 over 1, 2, 3
#   -> 150 / 1.75 = 85.71 -> 86.
IMG = np.tile(np.array([0, 0, 100, 100], np.uint8)[None, :, None], (4, 1, 3))
# Mask row [0, 1] grown to 3 px: cv2 INTER_NEAREST reads floor(x * 2 / 3)
# = 0, 0, 1; PIL NEAREST floor((x + 0.5) * 2 / 3) = 0, 1, 1.
MASK = np.array([[0, 1], [0, 1]], np.uint8)


@pytest.mark.parametrize('backend, row', [('cv2', [0, 100]),
                                          ('pillow', [14, 86])])
def test_letterbox_image_backends(backend, row):
    out = Letterbox(scale=(2, 2), interpolation='bilinear',
                    backend=backend)(dict(img=IMG.copy()))
    assert out['img'].shape == (2, 2, 3)
    assert out['img'][:, :, 0].tolist() == [row, row]


@pytest.mark.parametrize('backend, row', [('cv2', [0, 0, 1]),
                                          ('pillow', [0, 1, 1])])
def test_letterbox_mask_backends(backend, row):
    out = Letterbox(scale=(3, 3), backend=backend)(
        dict(img=np.zeros((2, 2, 3), np.uint8), gt_seg_map=MASK.copy(),
             seg_fields=['gt_seg_map']))
    assert out['gt_seg_map'].tolist() == [row] * 3


def test_letterbox_unknown_backend_lists_the_options():
    with pytest.raises(ValueError, match=r"'cv2', 'pillow'"):
        Letterbox(scale=(4, 4), backend='skimage')
