"""mmseg's ``init_model`` on our configs, and the sentence-aware
``inference_model`` that mmseg's own (image-only) one cannot be."""
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg.apis import init_model
from mmseg.registry import MODELS
from ris_plugins.apis import RefSegInferencer, inference_model

from ..conftest import DEMO_CFG, name_seeded_


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory):
    """Name-seeded baseline weights with mmengine's checkpoint ``meta``
    (which ``init_model`` reads)."""
    model = name_seeded_(MODELS.build(Config.fromfile(DEMO_CFG).model))
    path = str(tmp_path_factory.mktemp('ckpt') / 'baseline.pth')
    torch.save(dict(state_dict=model.state_dict(),
                    meta=dict(dataset_meta=dict(
                        classes=('background', 'object'),
                        palette=[[0, 0, 0], [255, 255, 255]]))), path)
    return path, model


def test_init_model_builds_and_loads(checkpoint):
    path, reference = checkpoint
    model = init_model(DEMO_CFG, path, device='cpu')  # pretrained=None
    assert not model.training and model.cfg.filename == DEMO_CFG
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value)
    assert model.dataset_meta['classes'] == ('background', 'object')


def test_inference_model_with_text_matches_inferencer(checkpoint):
    path, _ = checkpoint
    model = init_model(DEMO_CFG, path, device='cpu')
    img = (np.random.RandomState(0).rand(70, 90, 3) * 255).astype(np.uint8)
    texts = ['the red circle', 'the square on the left']
    samples = inference_model(model, img, texts)
    assert [s.text for s in samples] == texts
    inferencer = RefSegInferencer(DEMO_CFG, weights=path, device='cpu')
    out = inferencer(img, texts, batch_size=2)  # one batch, as above
    for sample, pred in zip(samples, out['predictions']):
        assert tuple(sample.pred_sem_seg.data.shape) == (1, 70, 90)
        np.testing.assert_array_equal(
            sample.pred_sem_seg.data[0].numpy(), pred['mask'])


def test_inference_model_needs_init_model():
    model = MODELS.build(Config.fromfile(DEMO_CFG).model)
    with pytest.raises(ValueError, match='init_model'):
        inference_model(model, np.zeros((8, 8, 3), np.uint8), 'a')
    assert osp.isfile(DEMO_CFG)
