"""Loading transforms: segmentation validation (RLE counts, polygons), the
image loader's EXIF convention and its errors on unreadable files."""
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ris_plugins.datasets.transforms import (LoadRefImage, LoadRefMask,
                                             check_segmentation,
                                             decode_rle_counts,
                                             decode_segmentation)

from ..conftest import exif_rotated_jpeg


def _runs(mask: np.ndarray) -> list:
    """Run lengths of a binary mask in COCO order (column-major, starting
    with a run of zeros), computed with numpy."""
    flat = mask.flatten(order='F')
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0] + runs


# Hand-encoded COCO compressed counts (maskApi.c rleToString: 5-bit groups,
# +48, counts after the second stored as the difference to counts[i-2]):
# [4] -> '4'; [4, 1, 4] -> '414'; [2, 1, 3, 1, 2] -> '2', '1', '3',
# 1 - 1 = 0 -> '0', 2 - 3 = -1 -> 31 + 48 = 'O'; [100] -> 100 = 3 * 32 + 4:
# (4 | 0x20) + 48 = 'T', then 3 + 48 = '3'.
@pytest.mark.parametrize('counts, runs', [
    ('4', [4]), ('414', [4, 1, 4]), ('2130O', [2, 1, 3, 1, 2]),
    (b'T3', [100]),
])
def test_decode_rle_counts_by_hand(counts, runs):
    assert decode_rle_counts(counts) == runs


def test_decode_rle_counts_matches_pycocotools_encoding():
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (40, 33), (64, 64)]:
        mask = (rng.random(shape) > 0.6).astype(np.uint8)
        mask[:3, :3] = 1  # long and short runs, both signs of deltas
        rle = mask_utils.encode(np.asfortranarray(mask))
        assert decode_rle_counts(rle['counts']) == _runs(mask)


def test_short_rle_is_an_error_not_random_pixels():
    # 3x3 image, counts sum to 5 < 9: pycocotools leaves 4 pixels
    # uninitialised (they change from run to run)
    short_list = {'size': [3, 3], 'counts': [4, 1]}
    short_str = {'size': [3, 3], 'counts': '41'}
    long_str = {'size': [3, 3], 'counts': '4140'}  # [4, 1, 4, 1] = 10
    for rle, total in [(short_list, 5), (short_str, 5), (long_str, 10)]:
        with pytest.raises(ValueError, match=f'sum to {total}.*3 x 3 = 9'):
            decode_segmentation(rle, 3, 3)
    with pytest.raises(ValueError, match='negative'):
        check_segmentation({'size': [3, 3], 'counts': [4, -1, 6]}, 3, 3)
    with pytest.raises(ValueError, match='counts'):
        check_segmentation({'size': [3, 3], 'counts': 'a b'}, 3, 3)
    good = {'size': [3, 3], 'counts': '414'}
    assert decode_segmentation(good, 3, 3).sum() == 1
    assert decode_segmentation(dict(good, counts=[4, 1, 4]), 3, 3)[1, 1] == 1


@pytest.mark.parametrize('segm, match', [
    ([[0, 0, 4, 0, 4, 4, 0]], r'odd number of coordinates \(7\)'),
    ([[0, 0, 4, 0]], r'at least 6 coordinates.*got 4'),
    ([[0, 0, 4, 0, 4, 4, 0, 4], []], r'part 1 .*empty'),
    ([], 'empty polygon list'),
    ([[0, 0, 'a', 0, 4, 4]], 'numbers'),
    ([[0, 0, float('nan'), 0, 4, 4]], 'finite'),
])
def test_malformed_polygons_are_errors(segm, match):
    with pytest.raises(ValueError, match=match):
        decode_segmentation(segm, 8, 8)


def test_load_ref_mask_names_ref_and_annotation():
    results = dict(ref_segmentation=[[0, 0, 4, 0, 4, 4, 0]], ori_height=8,
                   ori_width=8, ori_shape=(8, 8), img_path='x.jpg',
                   ref_id=12, ann_id=34)
    with pytest.raises(ValueError, match=r'ref 12 \(annotation 34.*odd'):
        LoadRefMask()(results)


@pytest.mark.parametrize('backend', ['cv2', 'pillow'])
def test_load_ref_image_ignores_exif_orientation(tmp_path, backend):
    path = str(tmp_path / 'rotated.jpg')
    raw = exif_rotated_jpeg(path).astype(int)
    out = LoadRefImage(imdecode_backend=backend)(dict(img_path=path))
    assert out['img'].shape == raw.shape
    assert np.abs(out['img'].astype(int) - raw).max() <= 3
    # the same file loaded honouring EXIF is a different array (so the
    # comparison above can fail)
    honoured = LoadRefImage(color_type='color', imdecode_backend=backend)(
        dict(img_path=path))
    assert np.abs(honoured['img'].astype(int) - raw).max() > 200


@pytest.mark.parametrize('content', [b'', b'not an image at all'])
def test_unreadable_image_names_the_file(tmp_path, content):
    path = tmp_path / 'COCO_train2014_000000000042.jpg'
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f'{path}.*ref 7'):
        LoadRefImage()(dict(img_path=str(path), ref_id=7))


def test_missing_image_names_the_file(tmp_path):
    path = str(tmp_path / 'missing.jpg')
    with pytest.raises(FileNotFoundError, match='missing.jpg'):
        LoadRefImage()(dict(img_path=path))


def test_load_ref_image_never_skips_a_sample():
    with pytest.raises(ValueError, match='ignore_empty'):
        LoadRefImage(ignore_empty=True)
