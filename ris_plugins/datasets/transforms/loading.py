"""Load the image and decode the referred object's COCO segmentation into
a binary mask."""
import math
import os.path as osp
from numbers import Number
from typing import Any, Dict, List, Optional, Union

import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from pycocotools import mask as mask_utils

from mmseg.registry import TRANSFORMS


def decode_rle_counts(counts: Union[str, bytes]) -> List[int]:
    """Run lengths of a COCO compressed RLE ``counts`` string.

    The format of pycocotools ``maskApi.c`` (``rleToString`` /
    ``rleFrString``): each count is written in 5-bit groups, least
    significant first, as ``chr(48 + group)`` with bit 0x20 set while more
    groups follow and bit 0x10 of the last group as the sign; counts after
    the second are stored as the difference to the count two before.

    Args:
        counts (str | bytes): The compressed string.

    Returns:
        list[int]: The run lengths (zeros first, then ones, alternating).

    Raises:
        ValueError: A character outside ``'0'``..``'o'`` (48..111), or a
            string that ends inside a count.
    """
    if isinstance(counts, bytes):
        counts = counts.decode('ascii', errors='replace')
    runs: List[int] = []
    value, shift, more = 0, 0, False
    for pos, char in enumerate(counts):
        group = ord(char) - 48
        if not 0 <= group < 64:
            raise ValueError(f'RLE counts string has the invalid character '
                             f'{char!r} at position {pos} (valid: chr(48) '
                             "'0' to chr(111) 'o')")
        value |= (group & 0x1f) << shift
        shift += 5
        more = bool(group & 0x20)
        if more:
            continue
        if group & 0x10:
            value |= -1 << shift  # sign-extend
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value, shift = 0, 0
    if more:
        raise ValueError('RLE counts string ends inside a count '
                         '(truncated)')
    return runs


def _check_rle(segm: dict, height: int, width: int) -> None:
    """See :func:`check_segmentation` (RLE branch)."""
    size = segm['size']
    if not (isinstance(size, (list, tuple)) and list(size) == [height,
                                                                width]):
        raise ValueError(f'RLE size {size} != image size {[height, width]}')
    counts = segm['counts']
    if isinstance(counts, (str, bytes)):
        runs = decode_rle_counts(counts)
    elif isinstance(counts, list):
        if not all(isinstance(c, Number) and float(c).is_integer()
                   for c in counts):
            raise ValueError('uncompressed RLE counts must be integers')
        runs = [int(c) for c in counts]
    else:
        raise ValueError('RLE counts must be a list of integers or a '
                         f'compressed string, got {type(counts).__name__}')
    if any(r < 0 for r in runs):
        raise ValueError(f'RLE counts hold a negative run length '
                         f'({min(runs)})')
    if sum(runs) != height * width:
        raise ValueError(
            f'RLE counts sum to {sum(runs)} pixels but the mask is {height} '
            f'x {width} = {height * width} (pycocotools would decode '
            'uninitialised memory or write past the mask)')


def _check_polygons(segm: list) -> None:
    """See :func:`check_segmentation` (polygon branch)."""
    if not segm:
        raise ValueError('empty polygon list')
    for i, poly in enumerate(segm):
        if not isinstance(poly, (list, tuple)) or not poly:
            raise ValueError(f'polygon part {i} is empty or not a list of '
                             'coordinates')
        if not all(isinstance(c, Number) and not isinstance(c, bool)
                   for c in poly):
            raise ValueError(f'polygon part {i} must be a flat list of '
                             'numbers [x0, y0, x1, y1, ...]')
        if not all(math.isfinite(c) for c in poly):
            raise ValueError(f'polygon part {i} has coordinates that are '
                             'not finite')
        if len(poly) % 2:
            raise ValueError(f'polygon part {i} has an odd number of '
                             f'coordinates ({len(poly)})')
        if len(poly) < 6:
            raise ValueError(
                f'polygon part {i} needs at least 6 coordinates (3 points), '
                f'got {len(poly)} (pycocotools reads 4 as a box)')


def check_segmentation(segm: Any, height: int, width: int) -> None:
    """Check a COCO segmentation before pycocotools decodes it.

    pycocotools does not check its input: RLE counts that sum to less than
    H * W leave pixels of uninitialised memory in the mask (ground truth
    that changes from run to run), a polygon with an odd number of
    coordinates loses its last one, and a 4-number polygon is read as a
    box.

    Args:
        segm: A polygon list ``[[x0, y0, x1, y1, ...], ...]`` (pixels) or an
            RLE ``{'size': [h, w], 'counts': list | str}``.
        height (int): Image height in pixels.
        width (int): Image width in pixels.

    Raises:
        ValueError: Neither format; an empty polygon list or part, a part
            with an odd number of coordinates, fewer than 6, or non-finite
            or non-numeric ones; an RLE whose size is not (height, width),
            whose counts are malformed, negative, or do not sum to
            height * width.
    """
    if isinstance(segm, list):
        _check_polygons(segm)
    elif isinstance(segm, dict) and 'counts' in segm and 'size' in segm:
        _check_rle(segm, height, width)
    else:
        raise ValueError('segmentation must be a polygon list or an RLE '
                         f'dict with size and counts, got '
                         f'{type(segm).__name__}')


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """Decode a COCO segmentation (polygon list, uncompressed or compressed
    RLE) to a binary mask, after :func:`check_segmentation`.

    Polygon parts are united (``> 0`` of their sum, as ``refer.getMask``
    should binarise; LAVT's ``== 1`` drops overlapping parts).

    Args:
        segm: ``[[x0, y0, ...], ...]`` or ``{'size': [h, w], 'counts': ...}``.
        height (int): Image height in pixels.
        width (int): Image width in pixels.

    Returns:
        np.ndarray: (H, W) uint8 mask with values in {0, 1}.

    Raises:
        ValueError: See :func:`check_segmentation`.
    """
    check_segmentation(segm, height, width)
    if isinstance(segm, list):
        rles = mask_utils.frPyObjects([list(map(float, p)) for p in segm],
                                      height, width)
        rle = mask_utils.merge(rles)
    else:
        rle = segm
        if isinstance(segm['counts'], list):
            rle = mask_utils.frPyObjects(segm, height, width)
    return (mask_utils.decode(rle) > 0).astype(np.uint8)


@TRANSFORMS.register_module()
class LoadRefImage(LoadImageFromFile):
    """mmcv ``LoadImageFromFile`` that ignores EXIF orientation by default
    and names the file when it cannot be read.

    Convention: pixels are used as stored, as COCO annotations (and
    ``refer``) index them; a JPEG with an EXIF Orientation tag would
    otherwise be loaded rotated while its mask is not. This is mmcv's
    ``color_type='color_ignore_orientation'`` (cv2
    ``IMREAD_COLOR | IMREAD_IGNORE_ORIENTATION``; the pillow backend skips
    ``exif_transpose`` for it).

    Required keys: ``img_path``. Added keys: ``img`` (H, W, 3) uint8 BGR
    (float32 with ``to_float32``), ``img_shape``, ``ori_shape`` (H, W).

    Args:
        color_type (str): ``mmcv.imfrombytes`` flag. Defaults to
            ``'color_ignore_orientation'``; ``'color'`` applies EXIF.
        imdecode_backend (str): ``'cv2'`` (default), ``'pillow'``,
            ``'turbojpeg'`` or ``'tifffile'``.
        **kwargs: Other ``LoadImageFromFile`` arguments (``to_float32``,
            ``backend_args``).

    Raises:
        ValueError: ``ignore_empty=True`` (it would skip samples silently);
            from :meth:`transform`, a file that cannot be decoded (empty,
            truncated, not an image), named with its ref if known.
        FileNotFoundError: From :meth:`transform`, a missing file.
    """

    def __init__(self,
                 color_type: str = 'color_ignore_orientation',
                 imdecode_backend: str = 'cv2',
                 ignore_empty: bool = False,
                 **kwargs) -> None:
        if ignore_empty:
            raise ValueError('LoadRefImage does not support ignore_empty='
                             'True: an unreadable image is an error, never a '
                             'silently skipped sample')
        super().__init__(
            color_type=color_type, imdecode_backend=imdecode_backend,
            **kwargs)

    def transform(self, results: Dict) -> Optional[Dict]:
        path = results['img_path']
        where = f'image {path!r}'
        if results.get('ref_id') is not None:
            where += f' (ref {results["ref_id"]})'
        try:
            return super().transform(results)
        except FileNotFoundError as err:
            raise FileNotFoundError(f'{where} does not exist') from err
        except Exception as err:  # cv2.error, AssertionError (None), ...
            size = osp.getsize(path) if osp.isfile(path) else None
            raise ValueError(
                f'cannot decode {where} ({size} bytes) with '
                f'{self.imdecode_backend}: {type(err).__name__}: '
                f'{str(err).strip()}') from err


@TRANSFORMS.register_module()
class LoadRefMask(BaseTransform):
    """Load the referred object's mask as ``gt_seg_map`` (0 background, 1
    object) at the image's original resolution.

    Required keys: ``ref_segmentation``, ``ori_height``, ``ori_width``
    (from ``instances.json``) and ``ori_shape`` (from the loaded image).
    Added keys: ``gt_seg_map`` (H, W) uint8; ``seg_fields`` gets
    ``'gt_seg_map'``.

    Raises:
        ValueError: The image on disk is not the size ``instances.json``
            records (the message names the image), or the segmentation is
            malformed.
    """

    def transform(self, results: Dict) -> Dict:
        h, w = results['ori_height'], results['ori_width']
        if tuple(results['ori_shape'][:2]) != (h, w):
            raise ValueError(
                f'image {results.get("img_path")!r} is '
                f'{tuple(results["ori_shape"][:2])} but instances.json says '
                f'{(h, w)}')
        try:
            mask = decode_segmentation(results['ref_segmentation'], h, w)
        except ValueError as err:
            raise ValueError(f'ref {results.get("ref_id")} '
                             f'(annotation {results.get("ann_id")}): '
                             f'{err}') from err
        results['gt_seg_map'] = mask
        results.setdefault('seg_fields', []).append('gt_seg_map')
        return results
