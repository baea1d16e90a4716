"""Decode the referred object's COCO segmentation into a binary mask."""
from typing import Any, Dict

import numpy as np
from mmcv.transforms import BaseTransform
from pycocotools import mask as mask_utils

from mmseg.registry import TRANSFORMS


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """Decode a COCO segmentation (polygon list, uncompressed or compressed
    RLE) to a binary mask.

    Polygon parts are united (``> 0`` of their sum, as ``refer.getMask``
    should binarise; LAVT's ``== 1`` drops overlapping parts).

    Args:
        segm: ``[[x0, y0, ...], ...]`` or ``{'size': [h, w], 'counts': ...}``.
        height (int): Image height in pixels.
        width (int): Image width in pixels.

    Returns:
        np.ndarray: (H, W) uint8 mask with values in {0, 1}.

    Raises:
        ValueError: Unrecognised format, or an RLE whose size is not
            (height, width).
    """
    if isinstance(segm, list):
        if not segm:
            raise ValueError('empty polygon list')
        rles = mask_utils.frPyObjects(segm, height, width)
        rle = mask_utils.merge(rles)
    elif isinstance(segm, dict) and 'counts' in segm and 'size' in segm:
        if list(segm['size']) != [height, width]:
            raise ValueError(f'RLE size {segm["size"]} != image size '
                             f'{[height, width]}')
        rle = segm
        if isinstance(segm['counts'], list):
            rle = mask_utils.frPyObjects(segm, height, width)
    else:
        raise ValueError('segmentation must be a polygon list or an RLE '
                         f'dict, got {type(segm).__name__}')
    return (mask_utils.decode(rle) > 0).astype(np.uint8)


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
