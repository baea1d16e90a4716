"""PhraseCutDataset on a generated fixture in the official VGPhraseCut
layout (refer_{split}.json, image_data_split.json, images/<id>.jpg), and a
zero-shot evaluation through the Runner."""
import json
import os
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.config import Config

from ris_plugins.datasets import PhraseCutDataset, RefCOCODataset

from ..conftest import ROOT

DEMO_CFG = osp.join(ROOT, 'configs', 'demo',
                    'haris-small_tiny-sam-clip_1xb16-2k_refshapes-160x160.py')
PIPELINE = [dict(type='LoadImageFromFile'), dict(type='LoadRefMask')]

# Two images. An axis-aligned rectangle (x0,y0)-(x1,y1) with integer
# corners covers (x1 - x0) x (y1 - y0) pixels under the COCO polygon
# convention: 9 x 7 = 63 for RECT; the second instance of task 1 is a
# 5-point polygon tracing the rectangle (20,2)-(28,10) (8 x 8 = 64) plus a
# degenerate 2-point polygon, which is dropped.
RECT = [[2, 2], [11, 2], [11, 9], [2, 9]]
RECT2 = [[20, 2], [28, 2], [28, 10], [24, 10], [20, 10]]
TASKS = [
    dict(task_id='101__7', image_id=101, ann_ids=[7],
         instance_boxes=[[2, 2, 9, 7]], Polygons=[[RECT]],
         phrase='red box on the left',
         phrase_structure=dict(name='box', attributes=['red'],
                               relation_ids=[], relation_descriptions=[],
                               type='attribute')),
    dict(task_id='101__7_8', image_id=101, ann_ids=[7, 8],
         instance_boxes=[[2, 2, 9, 7], [20, 2, 8, 8]],
         Polygons=[[RECT], [RECT2, [[0, 0], [5, 5]]]],
         phrase='shapes', phrase_structure=None),
    dict(task_id='102__3', image_id=102, ann_ids=[3],
         instance_boxes=[[0, 0, 4, 4]], Polygons=[[[[0, 0], [4, 0],
                                                     [4, 4], [0, 4]]]],
         phrase='corner', phrase_structure=dict(name='corner')),
]
SIZES = {101: (24, 32), 102: (16, 20)}  # (h, w)


def write_phrasecut(root: str, tasks=TASKS, split: str = 'test',
                    images=(101, 102)) -> str:
    os.makedirs(osp.join(root, 'images'), exist_ok=True)
    for image_id in images:
        h, w = SIZES[image_id]
        img = np.full((h, w, 3), 90, np.uint8)
        cv2.imwrite(osp.join(root, 'images', f'{image_id}.jpg'), img)
    with open(osp.join(root, f'refer_{split}.json'), 'w') as f:
        json.dump(tasks, f)
    with open(osp.join(root, 'image_data_split.json'), 'w') as f:
        json.dump([dict(image_id=i, width=SIZES[i][1], height=SIZES[i][0],
                        split=split, coco_id=None) for i in SIZES], f)
    return root


@pytest.fixture
def phrasecut_root(tmp_path):
    return write_phrasecut(str(tmp_path / 'VGPhraseCut_v0'))


def test_data_infos_have_refcoco_keys(phrasecut_root, refshapes_root):
    ds = PhraseCutDataset(data_root=phrasecut_root, split='test',
                          test_mode=True)
    assert len(ds) == 3
    info = ds.get_data_info(1)
    ref = RefCOCODataset(data_root=refshapes_root, dataset='refshapes',
                         split='val', test_mode=True).get_data_info(0)
    assert set(ref) <= set(info)
    assert info['ref_id'] == '101__7_8' and info['ann_id'] == [7, 8]
    assert info['text'] == 'shapes' and info['sent_id'] == 0
    assert (info['ori_height'], info['ori_width']) == (24, 32)
    assert info['img_path'] == osp.join(phrasecut_root, 'images', '101.jpg')
    # Both instances' polygons, flattened; the 2-point one is dropped.
    assert info['ref_segmentation'] == [
        [float(c) for p in RECT for c in p],
        [float(c) for p in RECT2 for c in p]]
    assert ds.get_data_info(0)['category_id'] == 'box'
    assert info['category_id'] is None


def test_masks_through_pipeline(phrasecut_root):
    ds = PhraseCutDataset(data_root=phrasecut_root, test_mode=True,
                          pipeline=PIPELINE)
    one, both, corner = ds[0], ds[1], ds[2]
    assert one['gt_seg_map'].shape == (24, 32)
    assert one['gt_seg_map'].sum() == 63
    assert one['gt_seg_map'][2:9, 2:11].all()
    assert both['gt_seg_map'].sum() == 63 + 64  # union of the instances
    assert both['gt_seg_map'][2:10, 20:28].all()
    assert corner['gt_seg_map'].shape == (16, 20)
    assert corner['gt_seg_map'].sum() == 16


def test_sizes_from_image_headers(phrasecut_root):
    os.remove(osp.join(phrasecut_root, 'image_data_split.json'))
    with pytest.raises(FileNotFoundError, match='image_data_split.json'):
        PhraseCutDataset(data_root=phrasecut_root, test_mode=True)
    ds = PhraseCutDataset(data_root=phrasecut_root, test_mode=True,
                          img_info_file=None, pipeline=PIPELINE)
    assert ds[2]['gt_seg_map'].shape == (16, 20)


def test_bad_input_errors(tmp_path):
    root = write_phrasecut(str(tmp_path / 'a'), images=(101, ))
    with pytest.raises(FileNotFoundError, match=r"102\.jpg.*102__3"):
        PhraseCutDataset(data_root=root, test_mode=True)
    with pytest.raises(ValueError, match='unknown PhraseCut split'):
        PhraseCutDataset(data_root=root, split='testA')
    with pytest.raises(FileNotFoundError, match='refer_val.json'):
        PhraseCutDataset(data_root=root, split='val')
    no_phrase = [dict(t) for t in TASKS[:1]]
    del no_phrase[0]['phrase']
    root = write_phrasecut(str(tmp_path / 'b'), tasks=no_phrase)
    with pytest.raises(ValueError, match=r"task 0 .*refer_test.*'phrase'"):
        PhraseCutDataset(data_root=root, test_mode=True)
    flat = [dict(TASKS[0], Polygons=[[2, 2, 11, 2, 11, 9]])]
    root = write_phrasecut(str(tmp_path / 'c'), tasks=flat)
    with pytest.raises(ValueError, match=r"101__7.*Polygons\[0\]"):
        PhraseCutDataset(data_root=root, test_mode=True)
    line = [dict(TASKS[0], Polygons=[[[[0, 0], [5, 5]]]])]
    root = write_phrasecut(str(tmp_path / 'd'), tasks=line)
    with pytest.raises(ValueError, match='at least 3 points'):
        PhraseCutDataset(data_root=root, test_mode=True)
    bad_meta = write_phrasecut(str(tmp_path / 'e'))
    with open(osp.join(bad_meta, 'image_data_split.json'), 'w') as f:
        json.dump([dict(image_id=101, width=32, height=24)], f)
    with pytest.raises(KeyError, match='image 102'):
        PhraseCutDataset(data_root=bad_meta, test_mode=True)


def test_zero_shot_evaluation_runs(phrasecut_root, tmp_path):
    """The HARIS demo model, untrained, tested on the PhraseCut fixture with
    the zero-shot override used by configs/haris/*zeroshot-phrasecut*."""
    from mmengine.runner import Runner
    cfg = Config.fromfile(DEMO_CFG)
    cfg.work_dir = str(tmp_path / 'work')
    cfg.test_dataloader = dict(
        batch_size=2, num_workers=0,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='PhraseCutDataset', data_root=phrasecut_root,
                     split='test', test_mode=True,
                     pipeline=cfg.test_pipeline))
    metrics = Runner.from_cfg(cfg).test()
    assert 'mIoU' in metrics and 0 <= metrics['mIoU'] <= 100


@pytest.mark.parametrize('phrase, match', [
    ('', 'empty'), ('  \n', 'empty'), (7, 'string'), (None, 'string'),
    (['red', 'box'], 'string'),
])
def test_bad_phrases_name_the_task(tmp_path, phrase, match):
    root = write_phrasecut(str(tmp_path / 'p'),
                           tasks=[dict(TASKS[0], phrase=phrase)])
    with pytest.raises(ValueError,
                       match=rf"task '101__7' of .*refer_test\.json.*{match}"):
        PhraseCutDataset(data_root=root, test_mode=True)


def test_entries_that_are_not_dicts(tmp_path):
    root = write_phrasecut(str(tmp_path / 'p'), tasks=[TASKS[0], 'oops'])
    with pytest.raises(ValueError, match=r'task 1 of .*refer_test\.json.*'
                       'dict'):
        PhraseCutDataset(data_root=root, test_mode=True)
    root = write_phrasecut(str(tmp_path / 'q'))
    with open(osp.join(root, 'image_data_split.json'), 'w') as f:
        json.dump([5], f)
    with pytest.raises(ValueError, match=r'entry 0 of .*image_data_split'
                       r'\.json.*dict'):
        PhraseCutDataset(data_root=root, test_mode=True)


def test_non_finite_polygon_names_the_task(tmp_path):
    nan_rect = [[2, 2], [11, 2], [11, float('nan')], [2, 9]]
    root = write_phrasecut(str(tmp_path / 'p'),
                           tasks=[dict(TASKS[0], Polygons=[[nan_rect]])])
    with pytest.raises(ValueError, match=r"task '101__7' .*finite"):
        PhraseCutDataset(data_root=root, test_mode=True)
