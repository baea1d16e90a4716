"""Every shipped config loads images the same way: EXIF orientation ignored
(pixels as stored, as COCO masks index them) and unreadable files named."""
import glob
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config

from mmseg.registry import TRANSFORMS

from ..conftest import ROOT, exif_rotated_jpeg

CONFIGS = sorted(
    glob.glob(osp.join(ROOT, 'configs', '*', '*.py')) +
    glob.glob(osp.join(ROOT, 'configs', '_base_', 'datasets', '*.py')) +
    glob.glob(osp.join(ROOT, 'projects', '*', 'configs', '*.py')) +
    glob.glob(osp.join(ROOT, 'projects', '*', 'configs', '*', '*.py')))
CONFIGS = [c for c in CONFIGS if '/_base_/' not in c or '/datasets/' in c]


def pipelines(cfg: Config):
    """(name, pipeline) of every dataloader's dataset, through wrappers
    (``dataset.dataset``; RefCOCODataset's own ``dataset`` is a name)."""
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg.get(loader, {}).get('dataset')
        while isinstance(dataset, dict):
            if 'pipeline' in dataset:
                yield loader, dataset['pipeline']
            dataset = dataset.get('dataset')


@pytest.fixture(scope='module')
def exif_jpeg(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('exif') / 'rotated.jpg')
    return path, exif_rotated_jpeg(path).astype(int)


@pytest.mark.parametrize('path', CONFIGS,
                         ids=lambda p: osp.relpath(p, ROOT))
def test_every_pipeline_loads_images_ignoring_exif(path, exif_jpeg):
    img_path, raw = exif_jpeg
    cfg = Config.fromfile(path)
    found = list(pipelines(cfg))
    if not found:
        pytest.skip('no data pipeline')
    for loader, pipeline in found:
        loads = [t for t in pipeline if 'Image' in t['type']
                 and t['type'].startswith('Load')]
        assert len(loads) == 1, (loader, pipeline)
        step = TRANSFORMS.build(loads[0])
        img = step(dict(img_path=img_path))['img'].astype(int)
        assert img.shape == raw.shape, loader
        assert np.abs(img - raw).max() <= 3, f'{loader}: EXIF applied'
        with pytest.raises(ValueError, match='empty.jpg'):
            empty = osp.join(osp.dirname(img_path), 'empty.jpg')
            open(empty, 'wb').close()
            step(dict(img_path=empty))


LAVT = osp.join(ROOT, 'configs', 'lavt',
                'lavt_swin-b_8xb4-40e_refcoco-480x480.py')
LAVT_UPSTREAM = osp.join(ROOT, 'configs', 'lavt',
                         'lavt-upstream-data_swin-b_8xb4-40e_refcoco-'
                         '480x480.py')


def _step(cfg: Config, loader: str, type_: str, **override):
    step = next(t for t in cfg[loader].dataset.pipeline if t.type == type_)
    return TRANSFORMS.build(dict(step, **override))


@pytest.mark.parametrize('path, img_row, mask_row, last_ids', [
    # cv2: see test_geometric.py; keep_sep: ... circle [SEP]
    (LAVT, [0, 100], [0, 0, 1], [4418, 102]),
    # PIL bilinear / nearest; cut: ... circle the (no [SEP])
    (LAVT_UPSTREAM, [14, 86], [0, 1, 1], [4418, 1996]),
])
def test_lavt_configs_data_pipeline(path, img_row, mask_row, last_ids):
    cfg = Config.fromfile(path)
    for loader in ('train_dataloader', 'test_dataloader'):
        img = np.tile(np.array([0, 0, 100, 100], np.uint8)[None, :, None],
                      (4, 1, 3))
        out = _step(cfg, loader, 'Resize', scale=(2, 2))(dict(img=img))
        assert out['img'][:, :, 0].tolist() == [img_row] * 2
        mask = np.array([[0, 1], [0, 1]], np.uint8)
        out = _step(cfg, loader, 'Resize', scale=(3, 3))(
            dict(img=np.zeros((2, 2, 3), np.uint8), gt_seg_map=mask,
                 seg_fields=['gt_seg_map']))
        assert out['gt_seg_map'].tolist() == [mask_row] * 3
        # 7 x 'the red circle' = 21 words + [CLS] + [SEP] = 23 > 20 tokens
        tok = _step(cfg, loader, 'TokenizeText')(
            dict(text=' '.join(['the red circle'] * 7)))
        assert tok['text_tokens'][0] == 101 and tok['text_mask'].all()
        assert tok['text_tokens'][-2:].tolist() == last_ids
