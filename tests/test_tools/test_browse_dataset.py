"""tools/analysis_tools/browse_dataset.py on the generated RefShapes: the
image after the pipeline, the ground-truth overlay and the sentence."""
import os
import os.path as osp

import cv2
import numpy as np
import pytest

from mmseg.registry import DATASETS
from ..conftest import load_tool, tiny_cfg

GT = (255, 0, 255)
ALPHA = 0.5


def configured(refshapes_root, tmp_path, split, size):
    """tiny_cfg with the ``split`` Letterbox at ``size`` and the
    visualizer's ground-truth colour and opacity set here."""
    cfg = tiny_cfg(refshapes_root, str(tmp_path / 'w'))
    for t in cfg[f'{split}_dataloader'].dataset.pipeline:
        if t.type == 'Letterbox':
            t.scale = (size, size)
    cfg.visualizer.update(gt_color=GT, alpha=ALPHA)
    return cfg


def erode(m, k):
    return cv2.erode(m.astype(np.uint8), np.ones((2 * k + 1,) * 2),
                     borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def dilate(m, k):
    return cv2.dilate(m.astype(np.uint8), np.ones((2 * k + 1,) * 2)) > 0


def read_rgb(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(int)


def names(dataset, n):
    out = []
    for i in range(n):
        info = dataset.get_data_info(i)
        stem = osp.splitext(osp.basename(info['img_path']))[0]
        out.append(f'{stem}_{info["ref_id"]}_{info["sent_id"]}.png')
    return sorted(out)


@pytest.fixture
def tool():
    return load_tool('analysis_tools/browse_dataset.py')


def test_train_split_after_the_pipeline(tool, refshapes_root, tmp_path):
    cfg = configured(refshapes_root, tmp_path, 'train', 160)
    train = cfg.train_dataloader.dataset
    # deterministic: no flip, the first sentence
    train.pipeline = [t for t in train.pipeline if t.type != 'RefRandomFlip']
    train.sentence_mode = 'first'
    cfg_path = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_path)
    out = str(tmp_path / 'out')
    files = tool.main([cfg_path, '--num', '5', '--output-dir', out])
    dataset = DATASETS.build(train)
    assert sorted(os.listdir(out)) == names(dataset, 5)
    assert len(files) == 5
    for i in range(5):
        item = dataset[i]
        ds = item['data_samples']
        img = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1].astype(int)
        gt = ds.gt_sem_seg.data[0].numpy() == 1
        stem = osp.splitext(osp.basename(ds.img_path))[0]
        pic = read_rgb(osp.join(out, f'{stem}_{ds.ref_id}_{ds.sent_id}.png'))
        assert pic.shape[1] == 160 and pic.shape[0] > 160  # sentence band
        top = pic[:160]
        inside, outside = erode(gt, 2), ~dilate(gt, 2)
        assert inside.any()
        blend = img * (1 - ALPHA) + np.array(GT) * ALPHA
        assert np.abs(top[inside] - blend[inside]).max() <= 2
        assert np.abs(top[outside] - img[outside]).max() <= 2
        assert (pic[160:] == 255).all(-1).any()


def test_val_split_mask_at_original_size(tool, refshapes_root, tmp_path):
    # mild resampling, to compare with the image files
    cfg = configured(refshapes_root, tmp_path, 'val', 320)
    cfg_path = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_path)
    out = str(tmp_path / 'out')
    tool.main([cfg_path, '--split', 'val', '--num', '3', '--output-dir',
               out])
    dataset = DATASETS.build(cfg.val_dataloader.dataset)
    assert sorted(os.listdir(out)) == names(dataset, 3)
    for i in range(3):
        ds = dataset[i]['data_samples']
        ori = read_rgb(ds.img_path)
        gt = ds.gt_sem_seg.data[0].numpy() == 1
        stem = osp.splitext(osp.basename(ds.img_path))[0]
        pic = read_rgb(osp.join(out, f'{stem}_{ds.ref_id}_{ds.sent_id}.png'))
        h, w = ori.shape[:2]
        assert pic.shape[1] == w and pic.shape[0] > h
        top = pic[:h]
        inside, outside = erode(gt, 3), ~dilate(gt, 3)
        blend = ori * (1 - ALPHA) + np.array(GT) * ALPHA
        assert np.abs(top[outside] - ori[outside]).mean() < 6
        assert np.abs(top[inside] - blend[inside]).mean() < 6
        assert np.abs(top[inside] - ori[inside]).mean() > 30


def test_bad_arguments(tool, refshapes_root, tmp_path):
    cfg = tiny_cfg(refshapes_root, str(tmp_path / 'w'))
    with pytest.raises(ValueError, match='--num must be >= 1'):
        tool.browse(cfg, 'val', str(tmp_path / 'o'), 0)
    cfg.test_dataloader = None
    with pytest.raises(KeyError, match=r"no test_dataloader.*'train', "
                       r"'val'"):
        tool.browse(cfg, 'test', str(tmp_path / 'o'), 2)
    with pytest.raises(SystemExit):
        tool.parse_args(['x.py', '--split', 'testA'])
