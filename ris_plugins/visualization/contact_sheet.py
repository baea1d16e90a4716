"""A contact sheet of predictions: the best, the worst and random samples
by IoU, each drawn by :class:`RefSegLocalVisualizer`."""
import copy
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.structures import PixelData
from pycocotools import mask as mask_utils

from mmseg.registry import HOOKS
from mmseg.structures import SegDataSample
from .local_visualizer import RefSegLocalVisualizer, mask_iou, sample_masks

#: Metainfo kept with each collected prediction (enough to redraw it).
KEPT_META = ('img_path', 'text', 'ref_id', 'sent_id', 'img_shape',
             'ori_shape', 'img_padding_size')


def select_samples(ious: Sequence[float],
                   num_best: int = 4,
                   num_worst: int = 4,
                   num_random: int = 8,
                   seed: int = 0) -> List[Tuple[int, str]]:
    """Pick samples for a contact sheet.

    Args:
        ious (Sequence[float]): IoU of every sample, in [0, 1].
        num_best, num_worst, num_random (int): How many of each.
        seed (int): Seed of the random pick.

    Returns:
        list[tuple[int, str]]: (sample index, label): the ``num_best``
        highest IoUs (highest first, labels ``'best 1'``...), the
        ``num_worst`` lowest of the rest (lowest first, ``'worst 1'``...),
        then ``num_random`` others drawn without replacement (``'random'``,
        in index order). With fewer samples than asked, every sample
        appears once. Ties keep index order.

    Raises:
        ValueError: A negative count.
    """
    for key, n in (('num_best', num_best), ('num_worst', num_worst),
                   ('num_random', num_random)):
        if n < 0:
            raise ValueError(f'{key} must be >= 0, got {n}')
    order = np.argsort(-np.asarray(ious, np.float64), kind='stable')
    best = [int(i) for i in order[:num_best]]
    rest = [int(i) for i in order[num_best:]][::-1]  # lowest IoU first
    worst = rest[:num_worst]
    others = np.array(sorted(rest[num_worst:]), dtype=np.int64)
    rng = np.random.default_rng(seed)
    picked = rng.choice(others, min(num_random, len(others)),
                        replace=False) if len(others) else others
    return ([(i, f'best {k + 1}') for k, i in enumerate(best)] +
            [(i, f'worst {k + 1}') for k, i in enumerate(worst)] +
            [(int(i), 'random') for i in sorted(picked)])


def encode_mask(mask: np.ndarray) -> dict:
    """COCO RLE (pycocotools) of an (H, W) bool mask."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def decode_mask(rle: dict) -> np.ndarray:
    """(H, W) bool mask of a COCO RLE."""
    return mask_utils.decode(rle).astype(bool)


def record_of(data_sample: SegDataSample) -> dict:
    """A compact, redrawable record of one prediction: the metainfo in
    :data:`KEPT_META`, ``iou`` in [0, 1] (as ``RefSegMetric`` without
    ``threshold``), and ``pred`` / ``gt`` as COCO RLE.

    Raises:
        ValueError: A sample without ``pred_sem_seg`` or ``gt_sem_seg``,
            or with both of different shapes.
    """
    pred, gt = sample_masks(data_sample)
    meta = data_sample.metainfo
    if pred is None or gt is None or pred.shape != gt.shape:
        raise ValueError(
            f'sample {meta.get("img_path")!r} (ref {meta.get("ref_id")}) '
            'needs pred_sem_seg and gt_sem_seg of one shape, got '
            f'{None if pred is None else pred.shape} and '
            f'{None if gt is None else gt.shape}')
    rec = {k: copy.deepcopy(meta[k]) for k in KEPT_META if k in meta}
    rec.update(iou=mask_iou(pred, gt), pred=encode_mask(pred),
               gt=encode_mask(gt))
    return rec


def sample_of(record: dict) -> SegDataSample:
    """The :class:`SegDataSample` (metainfo, ``pred_sem_seg``,
    ``gt_sem_seg`` (1, H, W)) of a :func:`record_of` record."""
    meta = {k: record[k] for k in KEPT_META if k in record}
    ds = SegDataSample(metainfo=meta)
    for key in ('pred', 'gt'):
        mask = torch.from_numpy(decode_mask(record[key])[None].astype(
            np.int64))
        setattr(ds, f'{key}_sem_seg', PixelData(data=mask))
    return ds


@HOOKS.register_module()
class CollectPredictionsHook(Hook):
    """Keeps a :func:`record_of` record of every test (or val) prediction
    in ``self.records``, in loader order (about 2 x 1-2 KB per sample as
    RLE instead of the full masks).

    Args:
        mode (str): ``'test'`` or ``'val'``.
    """
    priority = 'LOW'

    def __init__(self, mode: str = 'test') -> None:
        if mode not in ('test', 'val'):
            raise ValueError(f"mode must be 'test' or 'val', got {mode!r}")
        self.mode = mode
        self.records: List[dict] = []

    def _collect(self, outputs) -> None:
        self.records += [record_of(ds) for ds in outputs]

    def before_test(self, runner) -> None:
        if self.mode == 'test':
            self.records = []

    def before_val(self, runner) -> None:
        if self.mode == 'val':
            self.records = []

    def after_test_iter(self, runner, batch_idx, data_batch=None,
                        outputs=None) -> None:
        if self.mode == 'test':
            self._collect(outputs)

    def after_val_iter(self, runner, batch_idx, data_batch=None,
                       outputs=None) -> None:
        if self.mode == 'val':
            self._collect(outputs)


def collect_predictions(cfg: Config,
                        checkpoint: Optional[str] = None) -> List[dict]:
    """Run the Runner's test loop of ``cfg`` and return one record per
    sample (see :func:`record_of`).

    Args:
        cfg (Config): A full config (``work_dir`` set); its
            ``test_dataloader`` is run.
        checkpoint (str, optional): Weights (``load_from``); None keeps
            the initialisation.

    Returns:
        list[dict]: Records in loader order.
    """
    from mmengine.runner import Runner
    cfg = copy.deepcopy(cfg)
    cfg.load_from = checkpoint
    runner = Runner.from_cfg(cfg)
    hook = CollectPredictionsHook('test')
    runner.register_hook(hook)
    runner.test()
    return hook.records


def load_rgb(img_path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB as the pipelines read it (EXIF orientation
    ignored, as ``LoadRefImage``)."""
    return mmcv.bgr2rgb(mmcv.imread(img_path,
                                    flag='color_ignore_orientation'))


def contact_sheet(records: Sequence[dict],
                  visualizer: Optional[RefSegLocalVisualizer] = None,
                  num_best: int = 4,
                  num_worst: int = 4,
                  num_random: int = 8,
                  seed: int = 0,
                  cols: int = 4,
                  tile_width: int = 240,
                  gap: int = 6) -> Tuple[np.ndarray, List[Dict]]:
    """Draw the selected samples (:func:`select_samples`) in a grid.

    Each tile is the visualizer's picture (overlay, contours, sentence,
    IoU) titled with its group (``best 1``, ``worst 2``, ``random``) and
    ref id, scaled to ``tile_width``; tiles fill ``cols`` columns row by
    row on a white background, ``gap`` pixels apart.

    Args:
        records (Sequence[dict]): :func:`record_of` records.
        visualizer (RefSegLocalVisualizer, optional): Draws each tile
            (default: a new one with default colours).
        num_best, num_worst, num_random, seed: See
            :func:`select_samples`.
        cols (int): Tiles per row.
        tile_width (int): Width of a tile in pixels.
        gap (int): Pixels between tiles and around the sheet.

    Returns:
        tuple: (sheet (H, W, 3) uint8 RGB, placements): one dict per tile
        with ``index`` (into ``records``), ``label``, ``iou`` and ``box``
        (x0, y0, x1, y1) in the sheet.

    Raises:
        ValueError: No records, or ``cols`` / ``tile_width`` < 1.
    """
    if not records:
        raise ValueError('no predictions to draw a contact sheet from')
    if cols < 1 or tile_width < 1:
        raise ValueError(f'cols and tile_width must be >= 1, got {cols}, '
                         f'{tile_width}')
    if visualizer is None:
        visualizer = RefSegLocalVisualizer.get_instance(
            f'contact_sheet_{id(records)}')
    picks = select_samples([r['iou'] for r in records], num_best,
                           num_worst, num_random, seed)
    tiles = []
    for index, label in picks:
        rec = records[index]
        picture = visualizer.draw_sample(
            load_rgb(rec['img_path']), sample_of(rec),
            title=f'{label} (ref {rec.get("ref_id")})')
        h, w = picture.shape[:2]
        if w != tile_width:
            picture = mmcv.imresize(
                picture, (tile_width, max(1, round(h * tile_width / w))),
                interpolation='area' if w > tile_width else 'bilinear')
        tiles.append(picture)
    rows = [tiles[i:i + cols] for i in range(0, len(tiles), cols)]
    heights = [max(t.shape[0] for t in row) for row in rows]
    width = min(cols, len(tiles)) * (tile_width + gap) + gap
    sheet = np.full((sum(heights) + gap * (len(rows) + 1), width, 3), 255,
                    np.uint8)
    placements, y = [], gap
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            x = gap + c * (tile_width + gap)
            h, w = tile.shape[:2]
            sheet[y:y + h, x:x + w] = tile
            index, label = picks[r * cols + c]
            placements.append(dict(index=index, label=label,
                                   iou=records[index]['iou'],
                                   box=(x, y, x + w, y + h)))
        y += heights[r] + gap
    return sheet, placements


def write_contact_sheet(records: Sequence[dict], out_file: str,
                        **kwargs) -> List[Dict]:
    """:func:`contact_sheet` written as a PNG to ``out_file`` (folders
    created); returns the placements."""
    sheet, placements = contact_sheet(records, **kwargs)
    mmcv.imwrite(mmcv.rgb2bgr(sheet), osp.abspath(out_file))
    return placements
