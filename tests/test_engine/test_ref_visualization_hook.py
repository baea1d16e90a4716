"""RefSegVisualizationHook: `--show-dir` writes one correct picture per
(ref, sentence), for predictions at ori_shape (baseline) and on LAVT's
input grid (test_cfg.output_size='input')."""
import importlib.util
import os
import os.path as osp
from types import SimpleNamespace

import cv2
import mmseg
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner, save_checkpoint
from mmengine.structures import PixelData

from mmseg.structures import SegDataSample
from ris_plugins.engine.hooks.ref_visualization_hook import (
    RefSegVisualizationHook, picture_name)
from ris_plugins.visualization import RefSegLocalVisualizer

from ..conftest import ROOT, TINY_BERT, run_cfg, run_mim, tiny_cfg

LAVT_DEMO = osp.join(ROOT, 'configs', 'demo',
                     'lavt-small_swin-32-minilm_1xb16-1500i_refshapes-'
                     '160x160.py')


def mmseg_test_script():
    """mmseg's own tools/test.py (what `mim test mmseg` runs)."""
    path = osp.join(osp.dirname(mmseg.__file__), '.mim', 'tools', 'test.py')
    spec = importlib.util.spec_from_file_location('mmseg_test_py', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_show_dir(cfg: Config, show_dir: str) -> Config:
    """What `tools/test.py --show-dir DIR` does to the config."""
    args = SimpleNamespace(show=False, show_dir=show_dir, wait_time=2)
    return mmseg_test_script().trigger_visualization_hook(cfg, args)


def tiny_lavt_cfg(data_root: str, work_dir: str) -> Config:
    """LAVT-small shrunk, with LAVT's evaluation: squash resize to 64 x 64,
    mask loaded before resizing, predictions on the input grid."""
    cfg = run_cfg(LAVT_DEMO, data_root, work_dir, max_iters=1, size=64)
    cfg.model.backbone.update(
        arch=dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2,
                                                                 4]),
        window_size=2, img_size=64, text_channels=32)
    cfg.model.text_encoder = dict(
        type='BertTextEncoder', config=TINY_BERT, sentence_pooling='mean')
    cfg.model.text_cache_size = 0  # the tiny BERT trains
    cfg.model.decode_head.update(in_channels=[16, 32, 64, 128], channels=16)
    cfg.model.test_cfg = dict(mode='whole', output_size='input')
    pipe = cfg.test_dataloader.dataset.pipeline
    load, tok, pack = pipe[0], pipe[3], pipe[4]
    assert (load.type, tok.type, pack.type) == ('LoadRefImage',
                                                'TokenizeText',
                                                'PackSegInputs')
    cfg.test_dataloader.dataset.pipeline = [
        load, dict(type='LoadRefMask'),
        dict(type='Resize', scale=(64, 64), keep_ratio=False), tok, pack]
    return cfg


class ForceLeftHalf(Hook):
    """Sets every prediction to the left half of the model's own output
    grid (before the visualization hook runs), keeping the outputs."""
    priority = 'ABOVE_NORMAL'

    def __init__(self):
        self.outputs = []

    def after_test_iter(self, runner, batch_idx, data_batch=None,
                        outputs=None):
        for out in outputs:
            h, w = out.pred_sem_seg.shape
            pred = torch.zeros(1, h, w, dtype=torch.long)
            pred[:, :, :w // 2] = 1
            out.pred_sem_seg = PixelData(data=pred)
            self.outputs.append(out)


def dilate(m, k):
    return cv2.dilate(m.astype(np.uint8), np.ones((2 * k + 1,) * 2)) > 0


def erode(m, k):
    # pixels beyond the image count as background
    return cv2.erode(m.astype(np.uint8), np.ones((2 * k + 1,) * 2),
                     borderType=cv2.BORDER_CONSTANT, borderValue=0) > 0


def read_rgb(path):
    img = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def run_and_check(cfg: Config, show_dir: str, grid_of) -> None:
    cfg = with_show_dir(cfg, show_dir)
    # a fresh visualizer (mmengine reuses an instance of the same name)
    cfg.visualizer.name = show_dir
    runner = Runner.from_cfg(cfg)
    force = ForceLeftHalf()
    runner.register_hook(force)
    runner.test()
    vis = runner.visualizer
    assert isinstance(vis, RefSegLocalVisualizer)
    dataset = runner.test_dataloader.dataset
    infos = [dataset.get_data_info(i) for i in range(len(dataset))]
    assert len(infos) == 8 == len(force.outputs)
    expected = sorted(
        f'{osp.splitext(osp.basename(i["img_path"]))[0]}_{i["ref_id"]}_'
        f'{i["sent_id"]}.png' for i in infos)
    assert len(set(expected)) == 8  # sentences of one image all kept
    # the pictures, and mmengine's vis_data/ (config, scalars) as with
    # mmseg's own hook
    files = sorted(os.listdir(show_dir))
    assert [f for f in files if f != 'vis_data'] == expected
    for out in force.outputs:
        info = next(i for i in infos if i['ref_id'] == out.ref_id
                    and i['sent_id'] == out.sent_id)
        pic = read_rgb(osp.join(
            show_dir, f'{osp.splitext(osp.basename(info["img_path"]))[0]}_'
            f'{info["ref_id"]}_{info["sent_id"]}.png')).astype(int)
        image = read_rgb(info['img_path'])
        h, w = grid_of(image)
        assert pic.shape[1] == w and pic.shape[0] > h  # caption band
        grid_img = cv2.resize(image, (w, h)) if image.shape[:2] != (
            h, w) else image
        pred = np.zeros((h, w), bool)
        pred[:, :w // 2] = True
        gt = out.gt_sem_seg.data[0].numpy() == 1
        assert gt.shape == (h, w)
        top = pic[:h]
        inside = erode(pred, 3) & ~dilate(gt & ~erode(gt, 1), 3)
        blend = grid_img * (1 - vis.alpha) + np.array(
            vis.pred_color) * vis.alpha
        assert np.abs(top[inside] - blend[inside]).max() <= 2
        outside = ~dilate(pred, 3) & ~dilate(gt & ~erode(gt, 1), 3)
        assert np.abs(top[outside] - grid_img[outside]).max() <= 2
        ring = (gt & ~erode(gt, 1)) & ~dilate(pred, 3)
        if ring.sum() > 10:
            dist = np.abs(top[ring] - np.array(vis.gt_color)).max(-1)
            assert (dist <= 60).mean() > 0.8
        assert (pic[h:] == 255).all(-1).any()  # caption text


def test_show_dir_one_picture_per_sentence(refshapes_root, tmp_path):
    cfg = tiny_cfg(refshapes_root, str(tmp_path / 'work'))
    # predictions at ori_shape
    run_and_check(cfg, str(tmp_path / 'show'), lambda img: img.shape[:2])


def test_show_dir_lavt_input_grid(refshapes_root, tmp_path):
    cfg = tiny_lavt_cfg(refshapes_root, str(tmp_path / 'work'))
    # predictions on the 64 x 64 network input
    run_and_check(cfg, str(tmp_path / 'show'), lambda img: (64, 64))


def sample(img_path='a/img1.jpg', ref_id=3, sent_id=7, **meta):
    ds = SegDataSample(metainfo=dict(img_path=img_path, ref_id=ref_id,
                                     sent_id=sent_id, **meta))
    ds.pred_sem_seg = PixelData(data=torch.zeros(1, 4, 4, dtype=torch.long))
    return ds


def test_picture_name_and_missing_keys():
    assert picture_name(sample('x/COCO_train_0001.jpg', 12, 40)) == \
        'COCO_train_0001_12_40'
    ds = SegDataSample(metainfo=dict(img_path='x/a.jpg', ref_id=1))
    with pytest.raises(KeyError, match=r"x/a.jpg.*\['sent_id'\].*meta_keys"):
        picture_name(ds)


def test_duplicate_names_are_an_error(tmp_path):
    img = str(tmp_path / 'img1.png')
    cv2.imwrite(img, np.zeros((4, 4, 3), np.uint8))
    RefSegLocalVisualizer.get_instance('test_dup_vis')
    hook = RefSegVisualizationHook(draw=True, out_dir=str(tmp_path / 'o'))
    runner = SimpleNamespace(iter=0, log_dir=str(tmp_path))
    hook.before_test(runner)
    hook._after_iter(runner, 0, {}, [sample(img)], mode='test')
    assert os.listdir(tmp_path / 'o') == ['img1_3_7.png']
    with pytest.raises(ValueError, match=r'img1_3_7.png.*\(3, 7\)'):
        hook._after_iter(runner, 1, {}, [sample(img)], mode='test')
    hook.before_test(runner)  # a new run may write it again
    hook._after_iter(runner, 0, {}, [sample(img)], mode='test')


def test_runtime_default_hook():
    cfg = Config.fromfile(osp.join(ROOT, 'configs', '_base_',
                                   'default_runtime.py'))
    assert cfg.default_hooks.visualization.type == 'RefSegVisualizationHook'


@pytest.mark.slow
def test_mim_test_show_dir(refshapes_root, tmp_path):
    work = str(tmp_path / 'work')
    cfg = tiny_lavt_cfg(refshapes_root, work)
    runner = Runner.from_cfg(cfg)
    ckpt = str(tmp_path / 'random.pth')
    save_checkpoint({'state_dict': runner.model.state_dict()}, ckpt)
    cfg_path = str(tmp_path / 'lavt_tiny.py')
    cfg.dump(cfg_path)
    show = str(tmp_path / 'show')
    run_mim('test', 'mmseg', cfg_path, '--checkpoint', ckpt, '--work-dir',
            work, '--show-dir', show, cwd=ROOT)
    files = [f for f in os.listdir(show) if f.endswith('.png')]
    assert len(files) == 8


def test_val_pictures_through_backends_and_default_test_dir(tmp_path):
    img = str(tmp_path / 'img1.png')
    cv2.imwrite(img, np.zeros((4, 4, 3), np.uint8))
    log_dir = str(tmp_path / 'work' / '20240101_000000')
    RefSegLocalVisualizer.get_instance(
        'test_val_vis', vis_backends=[dict(type='LocalVisBackend')],
        save_dir=log_dir)  # as the Runner builds it without --show-dir
    hook = RefSegVisualizationHook(draw=True)
    runner = SimpleNamespace(iter=40, log_dir=log_dir)
    # validation during training: per-iteration names, never overwritten
    hook._after_iter(runner, 0, {}, [sample(img)], mode='val')
    assert os.listdir(osp.join(log_dir, 'vis_data', 'vis_image')) == [
        'val_img1_3_7_40.png']
    # test without --show-dir: <log_dir>/vis_image/
    hook.before_test(runner)
    hook._after_iter(runner, 0, {}, [sample(img)], mode='test')
    assert os.listdir(osp.join(log_dir, 'vis_image')) == ['img1_3_7.png']
    # draw=False (no --show / --show-dir): nothing
    quiet = RefSegVisualizationHook(out_dir=str(tmp_path / 'quiet'))
    quiet._after_iter(runner, 0, {}, [sample(img)], mode='test')
    assert not osp.exists(tmp_path / 'quiet')
