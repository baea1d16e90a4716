"""RefSegLocalVisualizer: overlay, contours, caption band, IoU, and the
prediction grid of every config (ori_shape, LAVT's input grid)."""
import os.path as osp

import cv2
import mmcv
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData

from mmseg.registry import VISUALIZERS
from ris_plugins.visualization import RefSegLocalVisualizer

from ..conftest import ROOT, rect, sample

PRED = (0, 220, 255)
GT = (255, 120, 0)
ALPHA = 0.5
_count = [0]


def visualizer(**kw) -> RefSegLocalVisualizer:
    _count[0] += 1
    return RefSegLocalVisualizer(
        name=f'test_vis_{_count[0]}', pred_color=PRED, gt_color=GT,
        alpha=ALPHA, **kw)


def texture(h, w, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(
        30, 200, (h, w, 3)).astype(np.uint8)


def erode(m, k):
    # pixels beyond the image count as background
    return cv2.erode(m.astype(np.uint8), np.ones((2 * k + 1,) * 2),
                     borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def dilate(m, k):
    return cv2.dilate(m.astype(np.uint8), np.ones((2 * k + 1,) * 2)) > 0


def blend(img, color):
    return img * (1 - ALPHA) + np.array(color) * ALPHA


def near(pixels, color, tol):
    """Fraction of (N, 3) pixels within ``tol`` of ``color`` (max abs)."""
    return (np.abs(pixels.astype(int) - np.array(color)).max(-1)
            <= tol).mean()


def test_overlay_inside_contour_on_boundary_nothing_outside():
    h, w = 96, 128
    img = texture(h, w)
    pred = rect(h, w, 20, 70, 30, 90)
    out = visualizer().add_datasample('s', img, sample(pred), draw_gt=False,
                                      out_file=None)
    top = out[:h].astype(int)
    inside = erode(pred, 3)
    outside = ~dilate(pred, 3)
    # overlay colour inside, blended with the image, exactly as alpha says
    assert np.abs(top[inside] - blend(img, PRED)[inside]).max() <= 1
    # untouched outside
    assert (top[outside] == img[outside]).all()
    # the contour (opaque prediction colour) on the mask boundary
    ring = pred & ~erode(pred, 1)
    assert near(top[ring], PRED, 40) > 0.9
    assert near(top[inside], PRED, 40) < 0.05


def test_caption_band_below_image_with_text_pixels():
    h, w = 100, 200
    img = texture(h, w)
    ds = sample(rect(h, w, 0, 10, 0, 10))
    out = visualizer().add_datasample('s', img, ds)
    assert out.shape[1] == w and out.shape[0] > h
    band = out[h:]
    white = (band == 255).all(-1)
    assert white.any()  # text drawn in the band
    # band background is black where there is no text
    assert ((band == 0).all(-1) | (band > 0).any(-1)).all()
    assert (band[:, -2:] == 0).all()  # nothing runs off the right edge


def test_long_sentence_wraps_and_stays_readable():
    text = ('the small purple triangle just left of the big white diamond '
            'below the circle')
    counts = []
    for width in (48, 160, 1200):
        vis = visualizer()
        img = texture(60, width)
        out = vis.add_datasample(
            's', img, sample(rect(60, width, 5, 20, 5, 20), text=text))
        lines = vis.caption_lines(sample(text=text), width)
        font = vis.caption_font_px(width)
        assert font >= 12 and font >= width / 32 - 1  # scales with width
        # nothing lost (narrow images break long words)
        assert ''.join(lines).replace(' ', '') == f'"{text}"'.replace(' ', '')
        band = out[60:]
        assert band.shape[0] >= len(lines) * 1.3 * font
        assert (band[:, -1] == 0).all()  # no text clipped on the right
        # text pixels span every line's rows
        rows = np.flatnonzero((band > 128).any(-1).any(-1))
        assert rows.max() - rows.min() >= (len(lines) - 1) * 1.3 * font
        counts.append(len(lines))
    assert counts[0] > counts[1] > counts[2] >= 1


def test_gt_contour_second_colour_and_iou_in_caption():
    h, w = 80, 200
    img = texture(h, w)
    pred = rect(h, w, 10, 50, 10, 50)   # 40 x 40
    gt = rect(h, w, 10, 50, 30, 90)     # 40 x 60, overlap 40 x 20
    vis = visualizer()
    out = vis.add_datasample('s', img, sample(pred, gt))
    # IoU = 800 / (1600 + 2400 - 800) = 25.0%
    assert vis.caption_lines(sample(pred, gt), w, pred, gt) == [
        '"the red circle"', 'IoU 25.0%']
    top = out[:h].astype(int)
    gt_ring_only = (gt & ~erode(gt, 1)) & ~dilate(pred, 3)
    assert near(top[gt_ring_only], GT, 40) > 0.9
    # the ground truth is not filled in when a prediction is drawn
    gt_inside_only = erode(gt, 3) & ~dilate(pred, 3)
    assert (top[gt_inside_only] == img[gt_inside_only]).all()
    # one more caption line than without ground truth
    no_gt = vis.add_datasample('s', img, sample(pred, gt), draw_gt=False)
    assert out.shape[0] > no_gt.shape[0]


def test_ground_truth_only_gets_the_overlay():
    h, w = 64, 64
    img = texture(h, w)
    gt = rect(h, w, 10, 40, 10, 40)
    out = visualizer().add_datasample('s', img, sample(gt=gt))[:h]
    inside, outside = erode(gt, 3), ~dilate(gt, 3)
    assert np.abs(out[inside] - blend(img, GT)[inside]).max() <= 1
    assert (out[outside] == img[outside]).all()


def test_one_and_two_channel_models_draw_the_same():
    h, w = 50, 70
    img = texture(h, w)
    logits2 = torch.randn(2, h, w)
    pred2 = logits2.argmax(0, keepdim=True)  # 2-channel head (argmax)
    prob1 = logits2.softmax(0)[1:]           # 1-channel head (sigmoid)
    pred1 = (prob1 > 0.5).long()
    a = sample(text='x')
    a.pred_sem_seg, a.seg_logits = PixelData(data=pred2), PixelData(
        data=logits2)
    b = sample(text='x')
    b.pred_sem_seg, b.seg_logits = PixelData(data=pred1), PixelData(
        data=prob1)
    out_a = visualizer().add_datasample('a', img, a)
    out_b = visualizer().add_datasample('b', img, b)
    np.testing.assert_array_equal(out_a, out_b)
    mask = pred2[0].numpy() > 0
    inside = erode(mask, 2)
    if inside.any():
        assert np.abs(out_a[:h][inside] - blend(img, PRED)[inside]).max() <= 1


def test_prediction_on_the_input_grid_resized_image():
    # LAVT: test_cfg.output_size='input', squash resize to 48 x 48
    ori = texture(100, 150)
    pred = rect(48, 48, 8, 30, 8, 30)
    ds = sample(pred, pred, img_shape=(48, 48), ori_shape=(100, 150),
                img_path='a.jpg')
    out = visualizer().add_datasample('s', ori, ds)
    assert out.shape[1] == 48
    grid_img = cv2.resize(ori, (48, 48), interpolation=cv2.INTER_LINEAR)
    outside = ~dilate(pred, 3)
    assert np.abs(out[:48][outside].astype(int) -
                  grid_img[outside]).max() <= 1


def test_prediction_on_letterboxed_input_grid():
    ori = texture(40, 80)
    pred = rect(64, 64, 20, 30, 20, 30)
    # Letterbox 80x40 -> 64x32 at rows 16..47 of a 64 x 64 canvas
    ds = sample(pred, img_shape=(64, 64), ori_shape=(40, 80),
                img_padding_size=(0, 0, 16, 16))
    out = visualizer().add_datasample('s', ori, ds)[:64]
    assert (out[:14] == 0).all() and (out[-14:] == 0).all()  # padding
    inner = cv2.resize(ori, (64, 32), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out[17, 40:].astype(int) - inner[1, 40:]).max() <= 1


def test_image_after_pipeline_with_mask_at_original_size():
    # browse_dataset on a test pipeline: image letterboxed, mask at ori
    ori_shape = (40, 80)
    canvas = np.zeros((64, 64, 3), np.uint8)
    canvas[16:48] = 200
    gt = rect(40, 80, 0, 40, 0, 40)
    ds = sample(gt=gt, img_shape=(64, 64), ori_shape=ori_shape,
                img_padding_size=(0, 0, 16, 16))
    out = visualizer().add_datasample('s', canvas, ds)
    assert out.shape[1] == 80
    outside = ~dilate(gt, 3)
    assert (out[:40][outside] == 200).all()  # padding cropped away


def test_image_that_fits_no_grid_is_an_error_naming_it():
    ds = sample(rect(30, 30, 0, 5, 0, 5), img_shape=(30, 30),
                ori_shape=(50, 50), img_path='data/x.jpg')
    with pytest.raises(ValueError, match=r"data/x.jpg.*\(40, 40\).*\(30, "
                       r"30\)"):
        visualizer().add_datasample('s', texture(40, 40), ds)
    bad = sample(rect(30, 30, 0, 5, 0, 5), rect(20, 20, 0, 5, 0, 5),
                 img_path='data/y.jpg', ref_id=7)
    with pytest.raises(ValueError, match=r'y.jpg.*ref 7.*differ'):
        visualizer().add_datasample('s', texture(30, 30), bad)


def test_sentence_with_dollars_and_missing_sentence():
    img = texture(60, 200)
    vis = visualizer()
    text = r'the $5 note $\frac{ left of $$ the coin'
    out = vis.add_datasample('s', img, sample(rect(60, 200, 0, 9, 0, 9),
                                              text=text))
    assert (out[60:] == 255).all(-1).any()
    assert vis.caption_lines(sample(text=None), 200) == ['(no sentence)']


def test_out_file_holds_the_returned_picture(tmp_path):
    img = texture(40, 60)
    out_file = str(tmp_path / 'sub' / 'p.png')
    ds = sample(rect(40, 60, 5, 25, 5, 25))
    out = visualizer().add_datasample('s', img, ds, out_file=out_file)
    np.testing.assert_array_equal(mmcv.imread(out_file,
                                              channel_order='rgb'), out)


def test_registered_and_default_in_runtime():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_',
                                   'default_runtime.py'))
    assert cfg.visualizer.type == 'RefSegLocalVisualizer'
    vis = VISUALIZERS.build(dict(cfg.visualizer, name='test_vis_registry'))
    assert isinstance(vis, RefSegLocalVisualizer)
    with pytest.raises(ValueError, match='pred_color'):
        RefSegLocalVisualizer(name='test_vis_bad', pred_color=(0, 300))
