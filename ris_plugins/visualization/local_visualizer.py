"""Pictures of referring segmentation samples: the image, the predicted
mask, the ground truth and the sentence."""
import textwrap
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import mmcv
import numpy as np
import torch
from mmengine.dist import master_only

from mmseg.registry import VISUALIZERS
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

Color = Tuple[int, int, int]
#: Text drawn when a sample carries no ``text`` metainfo.
NO_SENTENCE = '(no sentence)'


def sample_masks(data_sample: Optional[SegDataSample], draw_gt: bool = True,
                 draw_pred: bool = True
                 ) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """The binary prediction and ground truth of a sample, as the metric
    reads them.

    ``pred_sem_seg`` is already 0/1 for every model (argmax of 2 channels,
    or sigmoid > threshold of 1 channel; see
    ``RefSegmentor.postprocess_result``): foreground where > 0.
    ``gt_sem_seg``: foreground where == 1 (as ``RefSegMetric``).

    Args:
        data_sample (SegDataSample, optional): With ``pred_sem_seg`` and / or
            ``gt_sem_seg`` of shape (1, H, W).
        draw_gt (bool): Return the ground truth if present.
        draw_pred (bool): Return the prediction if present.

    Returns:
        tuple: (pred, gt), each an (H, W) bool array or None.
    """
    pred = gt = None
    if data_sample is None:
        return pred, gt
    if draw_pred and 'pred_sem_seg' in data_sample:
        pred = _to_numpy(data_sample.pred_sem_seg.data)[0] > 0
    if draw_gt and 'gt_sem_seg' in data_sample:
        gt = _to_numpy(data_sample.gt_sem_seg.data)[0] == 1
    return pred, gt


def _to_numpy(data) -> np.ndarray:
    if isinstance(data, torch.Tensor):
        return data.detach().cpu().numpy()
    return np.asarray(data)


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """IoU = |pred & gt| / |pred | gt| of two (H, W) bool masks, in [0, 1];
    0 when the union is empty, as ``RefSegMetric`` counts it."""
    union = int(np.logical_or(pred, gt).sum())
    if union == 0:
        return 0.0
    return int(np.logical_and(pred, gt).sum()) / union


def align_image(image: np.ndarray, grid: Tuple[int, int], meta: Dict,
                pad_val: int = 0) -> np.ndarray:
    """Bring the image onto the grid of the masks.

    Predictions live at ``ori_shape`` (mmseg's postprocessing) or, with
    ``test_cfg.output_size='input'`` (LAVT), at ``img_shape``, the network
    input after resizing (and ``Letterbox`` padding). The image is
    resized (and padded by ``img_padding_size`` = (left, right, top,
    bottom)) from ``ori_shape`` to ``img_shape``, or, for an image after
    the pipeline (``img_shape``) with masks at ``ori_shape`` (test
    pipelines that load the mask after resizing), un-padded and resized
    back.

    Args:
        image (ndarray): (h, w, 3) uint8.
        grid (tuple[int, int]): (H, W) of the masks.
        meta (dict): The sample's metainfo (``img_shape``, ``ori_shape``,
            optional ``img_padding_size``, ``img_path`` for errors).
        pad_val (int): Value of the padding drawn around a letterboxed
            image.

    Returns:
        ndarray: (H, W, 3) uint8.

    Raises:
        ValueError: The image is neither at the grid, nor at the
            ``ori_shape`` / ``img_shape`` that maps onto it.
    """
    h, w = image.shape[:2]
    grid = tuple(int(s) for s in grid)
    if (h, w) == grid:
        return image
    img_shape = tuple(meta.get('img_shape', ())[:2])
    ori_shape = tuple(meta.get('ori_shape', ())[:2])
    left, right, top, bottom = meta.get('img_padding_size', (0, 0, 0, 0))
    if img_shape == grid and ori_shape in ((h, w), ()):
        inner = mmcv.imresize(
            image, (grid[1] - left - right, grid[0] - top - bottom))
        return mmcv.impad(inner, padding=(left, top, right, bottom),
                          pad_val=pad_val)
    if ori_shape == grid and img_shape == (h, w):
        inner = image[top:h - bottom, left:w - right]
        return mmcv.imresize(inner, (grid[1], grid[0]))
    raise ValueError(
        f'cannot draw image {meta.get("img_path")!r} of shape {(h, w)} '
        f'on masks of shape {grid}: the image must be at the masks\' '
        f'shape, or at ori_shape {ori_shape or None} with masks at '
        f'img_shape {img_shape or None} (or the reverse)')


def binary_contours(mask: np.ndarray) -> List[np.ndarray]:
    """Boundaries of a binary mask (outer and hole borders) as polygons of
    pixel centres, (M, 2) float (x, y), from ``cv2.findContours``."""
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return [c[:, 0, :].astype(np.float64) + 0.5 for c in contours]


@VISUALIZERS.register_module()
class RefSegLocalVisualizer(SegLocalVisualizer):
    """Visualizer of referring segmentation: one picture per (image,
    sentence).

    The picture is the image with the predicted mask as a translucent
    overlay and its contour (``pred_color``), the ground-truth contour
    (``gt_color``) when ground truth is present, and below the image a
    caption band with the sentence (metainfo key ``text``), word-wrapped
    to the image width, and the IoU when both masks are present. With
    ground truth only (e.g. ``browse_dataset.py``) the ground truth gets
    the overlay. Everything is drawn with mmengine's
    :class:`~mmengine.visualization.Visualizer` primitives
    (``draw_binary_masks``, ``draw_polygons``, ``draw_texts``).

    The picture is drawn on the grid of the masks: predictions at
    ``ori_shape`` (default) or at the network input (LAVT's
    ``test_cfg.output_size='input'``), see :func:`align_image`. 1-channel
    (sigmoid) and 2-channel (argmax) models both give a 0/1
    ``pred_sem_seg``, see :func:`sample_masks`.

    Args:
        name (str): Instance name.
        image (ndarray, optional): RGB image to draw on.
        vis_backends (list[dict], optional): Storage backends.
        save_dir (str, optional): Root of the backends' files; with
            ``tools/test.py --show-dir DIR`` it is DIR, where
            ``RefSegVisualizationHook`` writes its pictures.
        classes, palette, dataset_name: As :class:`SegLocalVisualizer`
            (unused for drawing: the colours below are).
        alpha (float): Opacity of the mask overlay in [0, 1].
        pred_color (tuple[int]): RGB of the prediction overlay / contour.
        gt_color (tuple[int]): RGB of the ground-truth contour.
        line_width (float, optional): Contour width in points; None scales
            it with the image (about 2 px at 160 px, 3 px at 480 px).
        font_size (int, optional): Caption height of a line of text in
            pixels; None scales it with the image width (at least 12 px,
            width / 32).
        band_color (tuple[int]): RGB of the caption band.
        text_color (tuple[int]): RGB of the caption text.

    Source: mmseg ``SegLocalVisualizer.add_datasample`` (signature and
    storage behaviour), mmdet ``DetLocalVisualizer`` (masks as overlay +
    polygons).
    """

    def __init__(self,
                 name: str = 'visualizer',
                 image: Optional[np.ndarray] = None,
                 vis_backends: Optional[List[Dict]] = None,
                 save_dir: Optional[str] = None,
                 classes: Optional[List] = None,
                 palette: Optional[List] = None,
                 dataset_name: Optional[str] = None,
                 alpha: float = 0.5,
                 pred_color: Color = (0, 220, 255),
                 gt_color: Color = (255, 120, 0),
                 line_width: Optional[float] = None,
                 font_size: Optional[int] = None,
                 band_color: Color = (0, 0, 0),
                 text_color: Color = (255, 255, 255),
                 **kwargs) -> None:
        super().__init__(name, image, vis_backends, save_dir, classes,
                         palette, dataset_name, alpha, **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'alpha must be in [0, 1], got {alpha}')
        for key, color in (('pred_color', pred_color),
                           ('gt_color', gt_color),
                           ('band_color', band_color),
                           ('text_color', text_color)):
            if len(color) != 3 or not all(0 <= c <= 255 for c in color):
                raise ValueError(f'{key} must be an RGB triple in '
                                 f'[0, 255], got {color!r}')
        self.save_dir = save_dir
        self.pred_color = tuple(int(c) for c in pred_color)
        self.gt_color = tuple(int(c) for c in gt_color)
        self.line_width = line_width
        self.font_size = font_size
        self.band_color = tuple(int(c) for c in band_color)
        self.text_color = tuple(int(c) for c in text_color)

    # -- layout ------------------------------------------------------------
    def caption_font_px(self, width: int) -> int:
        """Height in pixels of one caption line's font for an image
        ``width`` pixels wide."""
        if self.font_size is not None:
            return int(self.font_size)
        return max(12, round(width / 32))

    def caption_lines(self, data_sample: Optional[SegDataSample],
                      width: int, pred: Optional[np.ndarray] = None,
                      gt: Optional[np.ndarray] = None,
                      title: Optional[str] = None) -> List[str]:
        """The caption, wrapped to ``width`` pixels: ``title`` (if any),
        the quoted sentence, then ``IoU xx.x%`` when both masks are given.

        Words longer than a line are broken; nothing is cut off.
        """
        text = None
        if data_sample is not None:
            text = data_sample.metainfo.get('text')
        text = NO_SENTENCE if text is None else f'"{text}"'
        font = self.caption_font_px(width)
        margin = max(2, font // 3)
        # ~0.6 em per character bounds DejaVu Sans' widest lower case
        chars = max(1, int((width - 2 * margin) / (0.62 * font)))
        lines = []
        for part in ([title] if title else []) + [text]:
            lines += textwrap.wrap(part, chars) or ['']
        if pred is not None and gt is not None:
            lines += textwrap.wrap(f'IoU {100 * mask_iou(pred, gt):.1f}%',
                                   chars)
        return lines

    # -- drawing ------------------------------------------------------------
    def _contour_width(self, h: int, w: int) -> float:
        if self.line_width is not None:
            return float(self.line_width)
        # about 2 px at 160 px, 3 px at 480 px; in points (dpi / 72 px)
        return max(2.0, np.sqrt(h * w) / 160.0) * 72 / self.dpi

    def _draw_contours(self, mask: np.ndarray, color: Color,
                       width: float) -> None:
        polygons = binary_contours(mask)
        if polygons:
            self.draw_polygons(polygons, edge_colors=color,
                               line_widths=width, alpha=1.0)

    def draw_masks(self, image: np.ndarray, pred: Optional[np.ndarray],
                   gt: Optional[np.ndarray]) -> np.ndarray:
        """The image with the prediction overlay + contour and the ground
        truth contour (overlay + contour without a prediction).

        Args:
            image (ndarray): (H, W, 3) uint8 RGB, on the masks' grid.
            pred, gt (ndarray, optional): (H, W) bool.

        Returns:
            ndarray: (H, W, 3) uint8 RGB.
        """
        self.set_image(image)
        h, w = image.shape[:2]
        width = self._contour_width(h, w)
        if pred is not None:
            if pred.any():
                self.draw_binary_masks(pred, colors=self.pred_color,
                                       alphas=self.alpha)
            if gt is not None:
                self._draw_contours(gt, self.gt_color, width)
            self._draw_contours(pred, self.pred_color, width)
        elif gt is not None:
            if gt.any():
                self.draw_binary_masks(gt, colors=self.gt_color,
                                       alphas=self.alpha)
            self._draw_contours(gt, self.gt_color, width)
        return self.get_image()

    def add_caption(self, image: np.ndarray,
                    lines: Sequence[str]) -> np.ndarray:
        """Append a band below ``image`` holding ``lines`` of text.

        Args:
            image (ndarray): (H, W, 3) uint8 RGB.
            lines (list[str]): Caption lines, each fitting the width.

        Returns:
            ndarray: (H + band, W, 3) uint8 RGB; the band is
            ``len(lines)`` lines of ``1.3 * font`` pixels plus margins.
        """
        h, w = image.shape[:2]
        font = self.caption_font_px(w)
        line_h = int(round(1.3 * font))
        margin = max(2, font // 3)
        band = np.empty((len(lines) * line_h + 2 * margin, w, 3), np.uint8)
        band[...] = self.band_color
        self.set_image(np.concatenate([image, band], axis=0))
        if lines:
            # escape '$' so that a sentence is never parsed as mathtext
            texts = [line.replace('$', r'\$') for line in lines]
            positions = np.array([[margin, h + margin + i * line_h]
                                  for i in range(len(lines))], np.float64)
            self.draw_texts(texts, positions,
                            font_sizes=font * 72 / self.dpi,
                            colors=self.text_color,
                            vertical_alignments='top')
        return self.get_image()

    def draw_sample(self, image: np.ndarray,
                    data_sample: Optional[SegDataSample],
                    draw_gt: bool = True, draw_pred: bool = True,
                    title: Optional[str] = None) -> np.ndarray:
        """The whole picture of one sample (masks, contours, caption).

        Args:
            image (ndarray): (h, w, 3) uint8 RGB image, at the masks' grid
                or at the ``ori_shape`` / ``img_shape`` that maps onto it
                (see :func:`align_image`).
            data_sample (SegDataSample, optional): ``pred_sem_seg`` and / or
                ``gt_sem_seg`` (1, H, W), metainfo ``text``.
            draw_gt, draw_pred (bool): Which masks to draw.
            title (str, optional): A first caption line.

        Returns:
            ndarray: (H + band, W, 3) uint8 RGB.

        Raises:
            ValueError: Prediction and ground truth of different shapes, or
                an image that does not map onto them.
        """
        pred, gt = sample_masks(data_sample, draw_gt, draw_pred)
        meta = data_sample.metainfo if data_sample is not None else {}
        if pred is not None and gt is not None and pred.shape != gt.shape:
            raise ValueError(
                f'prediction {pred.shape} and ground truth {gt.shape} of '
                f'{meta.get("img_path")!r} (ref {meta.get("ref_id")}) '
                'differ in shape')
        mask = pred if pred is not None else gt
        if mask is not None:
            image = align_image(image, mask.shape, meta)
        drawn = self.draw_masks(image, pred, gt)
        lines = self.caption_lines(data_sample, drawn.shape[1], pred, gt,
                                   title)
        return self.add_caption(drawn, lines)

    @master_only
    def add_datasample(self,
                       name: str,
                       image: np.ndarray,
                       data_sample: Optional[SegDataSample] = None,
                       draw_gt: bool = True,
                       draw_pred: bool = True,
                       show: bool = False,
                       wait_time: float = 0,
                       out_file: Optional[str] = None,
                       step: int = 0,
                       with_labels: Optional[bool] = True) -> np.ndarray:
        """Draw a sample (see :meth:`draw_sample`), then show it, write it
        to ``out_file`` or, without ``out_file``, add it to the storage
        backends under ``name``, as mmseg's ``SegLocalVisualizer``.

        Args:
            name (str): Image identifier (window title, backend name).
            image (ndarray): (h, w, 3) uint8 RGB.
            data_sample (SegDataSample, optional): Prediction / ground
                truth, metainfo ``text``.
            draw_gt, draw_pred (bool): Which masks to draw.
            show (bool): Display the picture.
            wait_time (float): Display time in seconds.
            out_file (str, optional): PNG path to write.
            step (int): Global step for the backends.
            with_labels (bool): Unused (kept for mmseg's signature).

        Returns:
            ndarray: The picture, (H + band, W, 3) uint8 RGB (also
            :meth:`get_image`).
        """
        drawn = self.draw_sample(image, data_sample, draw_gt, draw_pred)
        if show:
            self.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            mmcv.imwrite(mmcv.rgb2bgr(drawn), out_file)
        else:
            self.add_image(name, drawn, step)
        return drawn
