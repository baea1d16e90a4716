"""Every shipped config loads images the same way: EXIF orientation ignored
(pixels as stored, as COCO masks index them) and unreadable files named."""
import glob
import os.path as osp

import numpy as np
import pytest
from mmengine.config import Config

from mmseg.registry import TRANSFORMS

from ..conftest import ROOT
from .test_loading import _exif_rotated_jpeg

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
    return path, _exif_rotated_jpeg(path).astype(int)


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
