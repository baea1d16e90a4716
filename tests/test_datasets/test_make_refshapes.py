import json
import os.path as osp
import pickle
import random

import numpy as np

from ris_plugins.datasets.transforms import decode_segmentation


def test_deterministic(make_refshapes, tmp_path):
    a, b = str(tmp_path / 'a'), str(tmp_path / 'b')
    make_refshapes.generate(a, 12, seed=3)
    make_refshapes.generate(b, 12, seed=3)
    for name in ('instances.json', 'refs(unc).p'):
        with open(osp.join(a, 'refshapes', name), 'rb') as fa, open(
                osp.join(b, 'refshapes', name), 'rb') as fb:
            assert fa.read() == fb.read()


def test_layout_masks_and_splits(make_refshapes, refshapes_root):
    with open(osp.join(refshapes_root, 'refshapes', 'instances.json')) as f:
        inst = json.load(f)
    with open(osp.join(refshapes_root, 'refshapes', 'refs(unc).p'),
              'rb') as f:
        refs = pickle.load(f)
    anns = {a['id']: a for a in inst['annotations']}
    imgs = {i['id']: i for i in inst['images']}
    assert {r['split'] for r in refs} == {'train', 'val', 'testA', 'testB'}
    formats = set()
    for ref in refs:
        assert 1 <= len(ref['sentences']) <= 3
        ann, img = anns[ref['ann_id']], imgs[ref['image_id']]
        formats.add(type(ann['segmentation']).__name__)
        mask = decode_segmentation(ann['segmentation'], img['height'],
                                   img['width'])
        assert mask.sum() == ann['area'] > 0
        kind = make_refshapes.KINDS[ref['category_id'] - 1]
        if ref['split'] == 'testA':
            assert kind in make_refshapes.GROUP_A
        if ref['split'] == 'testB':
            assert kind in make_refshapes.GROUP_B
    assert formats == {'list', 'dict'}  # polygons and RLE both occur
    sizes = {(i['height'], i['width']) for i in inst['images']}
    assert len(sizes) > 10


def test_descriptions_are_unique(make_refshapes):
    S = make_refshapes.Shape
    shapes = [
        S('circle', 'red', True, 20, 50, 10),
        S('circle', 'blue', True, 80, 50, 10),
        S('square', 'red', False, 140, 50, 10),
    ]
    sents = {s for _, s in make_refshapes.describe(shapes[0], shapes,
                                                   random.Random(0))}
    assert 'the red circle' in sents
    assert 'the leftmost circle' in sents or 'the circle on the left' in sents
    assert 'the circle' not in sents  # two circles: ambiguous
    assert 'the circle left of the blue circle' in sents
    sq = {s for _, s in make_refshapes.describe(shapes[2], shapes,
                                                random.Random(0))}
    assert 'the square' in sq and 'the small square' in sq


def test_overlapping_visible_masks(make_refshapes):
    rng = np.random.default_rng(0)
    S = make_refshapes.Shape
    shapes = [S('square', 'red', True, 40, 40, 20),
              S('circle', 'blue', True, 50, 40, 20)]
    make_refshapes.render(rng, 80, 100, shapes)
    assert shapes[0].occluded and not shapes[1].occluded
    assert not (shapes[0].visible & shapes[1].visible).any()
