"""VGPhraseCut (Wu et al., CVPR 2020) in its official layout, for
zero-shot evaluation of RIS models.

Source: ``ChenyunWu/PhraseCutDataset`` (README "Annotation data
structure", ``utils/file_paths.py``): ``<dataset_dir>/refer_{split}.json``,
``image_data_split.json`` and Visual Genome images
``images/<image_id>.jpg``.
"""
import json
import os.path as osp
from numbers import Number
from typing import Any, Dict, List, Optional

from mmengine.logging import print_log
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from .transforms.loading import check_segmentation

PHRASECUT_SPLITS = ('train', 'val', 'test', 'miniv')
TASK_KEYS = ('task_id', 'image_id', 'Polygons', 'phrase')


def _load_json(path: str, what: str) -> Any:
    """Read JSON; FileNotFoundError / ValueError name the file."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'PhraseCut {what} file {path!r} does not '
                                'exist')
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f'cannot parse PhraseCut {what} file {path!r}: '
                         f'{err}') from err


def _is_point(p: Any) -> bool:
    return (isinstance(p, (list, tuple)) and len(p) == 2
            and all(isinstance(c, Number) for c in p))


def polygons_to_coco(polygons: Any, where: str) -> tuple:
    """PhraseCut ``Polygons`` -> a COCO polygon list (one flat
    ``[x0, y0, x1, y1, ...]`` per polygon, all instances together, so
    ``LoadRefMask`` unites them).

    ``polygons`` is a list of instances, each a list of polygons, each a
    list of ``[x, y]`` points (pixels). Polygons with fewer than 3 points
    enclose no area and are dropped (pycocotools would read a 2-point
    polygon as a box); the official rasteriser draws them as lines.

    Args:
        polygons: The task's ``Polygons``.
        where (str): Task description for error messages.

    Returns:
        tuple: (list of flat polygons, number of dropped polygons).

    Raises:
        ValueError: Not nested as instances -> polygons -> [x, y] points,
            or no polygon with at least 3 points.
    """
    if not isinstance(polygons, list):
        raise ValueError(f'{where}: Polygons must be a list of instances, '
                         f'got {type(polygons).__name__}')
    flat, dropped = [], 0
    for i, instance in enumerate(polygons):
        if not isinstance(instance, list):
            raise ValueError(f'{where}: Polygons[{i}] must be a list of '
                             f'polygons, got {type(instance).__name__}')
        for j, poly in enumerate(instance):
            if not isinstance(poly, list) or not all(map(_is_point, poly)):
                raise ValueError(f'{where}: Polygons[{i}][{j}] must be a '
                                 'list of [x, y] points')
            if len(poly) < 3:
                dropped += 1
                continue
            flat.append([float(c) for point in poly for c in point])
    if not flat:
        raise ValueError(f'{where}: no polygon with at least 3 points (the '
                         'referred region is empty)')
    return flat, dropped


@DATASETS.register_module()
class PhraseCutDataset(BaseSegDataset):
    """VGPhraseCut phrase-region pairs as referring segmentation samples.

    Reads ``<data_root>/refer_{split}.json`` (a list of tasks, each with
    ``task_id``, ``image_id``, ``ann_ids``, ``instance_boxes``,
    ``Polygons``, ``phrase``, ``phrase_structure``) and the image sizes from
    ``<data_root>/<img_info_file>`` (official ``image_data_split.json``: a
    list of dicts with ``image_id``, ``width``, ``height``); images are
    ``<data_root>/<data_prefix.img_path>/<image_id>.jpg``. One sample per
    task (one phrase each). The region is the union of all referred
    instances' polygons, rasterised by ``LoadRefMask`` with pycocotools
    (the official API uses PIL's polygon fill with outline, which can
    differ by one pixel along the border).

    Each data info has the keys of :class:`RefCOCODataset`'s, so the same
    pipelines (``LoadRefMask``, ``TokenizeText``, ``Letterbox``) and
    ``RefSegMetric`` work: ``img_path``, ``ref_id`` (= ``task_id``),
    ``ann_id`` (the task's ``ann_ids`` list), ``image_id``,
    ``category_id`` (``phrase_structure['name']`` or None),
    ``ref_segmentation`` (COCO polygon list), ``ori_height`` /
    ``ori_width`` (pixels), ``text`` (the phrase), ``sent_id`` (0),
    ``seg_fields``.

    Args:
        split (str): One of :data:`PHRASECUT_SPLITS` (zero-shot
            evaluation: ``'test'``).
        refer_file (str): Annotation name pattern, formatted with ``split``.
        img_info_file (str, optional): Image metadata file under
            ``data_root``; None reads each image's size from its header
            (PIL, no decoding).
        data_prefix (dict): ``img_path``: image folder under ``data_root``.
        **kwargs: :class:`mmseg.datasets.BaseSegDataset` arguments
            (``test_mode``, ``indices``, ``pipeline``, ...).

    Raises:
        ValueError: Unknown ``split``; a file that is not JSON or not a
            list; a task or metadata entry that is not a dict; a task
            lacking a key of :data:`TASK_KEYS` (the message names the file,
            the task index and the key), with malformed / empty
            ``Polygons``, or whose ``phrase`` is not a string or is empty /
            whitespace only (named with its ``task_id``); an empty split.
        FileNotFoundError: Missing annotation / metadata file, or a missing
            image (named with its task).
        KeyError: An image absent from ``img_info_file``.
    """

    METAINFO = dict(
        classes=('background', 'object'), palette=[[0, 0, 0], [255, 255,
                                                               255]])

    def __init__(self,
                 split: str = 'test',
                 refer_file: str = 'refer_{split}.json',
                 img_info_file: Optional[str] = 'image_data_split.json',
                 data_prefix: dict = dict(img_path='images'),
                 **kwargs) -> None:
        if split not in PHRASECUT_SPLITS:
            raise ValueError(f'unknown PhraseCut split {split!r}; valid: '
                             f'{PHRASECUT_SPLITS}')
        self.split = split
        self.refer_file = refer_file.format(split=split)
        self.img_info_file = img_info_file
        super().__init__(data_prefix=data_prefix, **kwargs)

    def _join_prefix(self) -> None:
        super()._join_prefix()
        self.refer_file = osp.join(self.data_root, self.refer_file)
        if self.img_info_file is not None:
            self.img_info_file = osp.join(self.data_root, self.img_info_file)

    def _image_sizes(self) -> Optional[Dict[int, tuple]]:
        """image_id -> (height, width) from ``img_info_file``."""
        if self.img_info_file is None:
            return None
        infos = _load_json(self.img_info_file, 'image metadata')
        if not isinstance(infos, list):
            raise ValueError(f'PhraseCut image metadata {self.img_info_file!r}'
                             f' must hold a list, got {type(infos).__name__}')
        sizes = {}
        for k, info in enumerate(infos):
            if not isinstance(info, dict):
                raise ValueError(f'entry {k} of {self.img_info_file!r} must '
                                 f'be a dict, got {type(info).__name__}')
            missing = [key for key in ('image_id', 'width', 'height')
                       if key not in info]
            if missing:
                raise ValueError(f'entry {k} of {self.img_info_file!r} lacks '
                                 f'keys {missing}')
            sizes[info['image_id']] = (info['height'], info['width'])
        return sizes

    def _size_of(self, image_id: int, img_path: str,
                 sizes: Optional[Dict[int, tuple]]) -> tuple:
        if sizes is None:
            from PIL import Image

            # the stored size: EXIF orientation is ignored, as LoadRefImage
            # ignores it when the pixels are read
            with Image.open(img_path) as img:
                return img.height, img.width
        if image_id not in sizes:
            raise KeyError(f'image {image_id} (in {self.refer_file!r}) is '
                           f'not in {self.img_info_file!r}')
        return sizes[image_id]

    def load_data_list(self) -> List[dict]:
        """Read the tasks of ``split`` into data infos (see class doc)."""
        tasks = _load_json(self.refer_file, 'annotation')
        if not isinstance(tasks, list):
            raise ValueError(f'PhraseCut annotation {self.refer_file!r} must '
                             f'hold a list of tasks, got '
                             f'{type(tasks).__name__}')
        if not tasks:
            raise ValueError(f'PhraseCut annotation {self.refer_file!r} has '
                             'no tasks')
        sizes = self._image_sizes()
        checked: Dict[int, tuple] = {}
        data_list, dropped = [], 0
        for k, task in enumerate(tasks):
            if not isinstance(task, dict):
                raise ValueError(f'task {k} of {self.refer_file!r} must be a '
                                 f'dict, got {type(task).__name__}')
            missing = [key for key in TASK_KEYS if key not in task]
            if missing:
                raise ValueError(f'task {k} of {self.refer_file!r} lacks keys '
                                 f'{missing} (required: {TASK_KEYS})')
            where = f'task {task["task_id"]!r} of {self.refer_file!r}'
            phrase = task['phrase']
            if not isinstance(phrase, str):
                raise ValueError(f"{where}: 'phrase' must be a string, got "
                                 f'{type(phrase).__name__} {phrase!r:.40}')
            if not phrase.strip():
                raise ValueError(f'{where}: the phrase is empty or '
                                 f'whitespace only ({phrase!r})')
            segm, n = polygons_to_coco(task['Polygons'], where)
            dropped += n
            image_id = task['image_id']
            img_path = osp.join(self.data_prefix['img_path'],
                                f'{image_id}.jpg')
            if image_id not in checked:
                if not osp.isfile(img_path):
                    raise FileNotFoundError(
                        f'image {img_path!r} of {where} does not exist')
                checked[image_id] = self._size_of(image_id, img_path, sizes)
            h, w = checked[image_id]
            try:
                check_segmentation(segm, h, w)
            except ValueError as err:
                raise ValueError(f'{where}: bad Polygons: {err}') from err
            structure = task.get('phrase_structure') or {}
            data_list.append(
                dict(
                    img_path=img_path,
                    ref_id=task['task_id'],
                    ann_id=list(task.get('ann_ids', [])),
                    image_id=image_id,
                    category_id=structure.get('name'),
                    ref_segmentation=segm,
                    ori_height=h,
                    ori_width=w,
                    text=task['phrase'],
                    sent_id=0,
                    seg_fields=[],
                    reduce_zero_label=False))
        if dropped:
            print_log(
                f'PhraseCutDataset: dropped {dropped} polygon(s) with fewer '
                f'than 3 points in {self.refer_file!r}', logger='current',
                level=30)
        return data_list
