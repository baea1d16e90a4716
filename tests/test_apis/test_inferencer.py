"""RefSegInferencer: the call contract, files, encoding an image once for
several sentences, strict weights, and every bad input named."""
import glob
import os
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.apis import RefSegInferencer, find_config

from ..conftest import DEMO_CFG, ROOT, name_seeded_, tiny_cfg

SENTENCES = ['the small red circle', 'the blue square on the left',
             'the star left of the green square', 'the large cross']


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 BGR: a textured background and a bright disc."""
    rng = np.random.RandomState(seed)
    img = (rng.rand(h, w, 3) * 80).astype(np.uint8)
    cv2.circle(img, (w // 3, h // 2), min(h, w) // 4, (40, 40, 230), -1)
    return img


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """A tiny baseline config (64x64 input, random 1-layer BERT), its
    name-seeded weights as a checkpoint, and an image file (90x130)."""
    tmp = tmp_path_factory.mktemp('tiny')
    cfg = tiny_cfg(str(tmp), str(tmp))
    model = name_seeded_(MODELS.build(cfg.model))
    ckpt = str(tmp / 'tiny.pth')
    torch.save({'state_dict': model.state_dict()}, ckpt)
    img = str(tmp / 'shapes.png')
    cv2.imwrite(img, _image(90, 130))
    inferencer = RefSegInferencer(cfg, weights=ckpt, device='cpu')
    return dict(cfg=cfg, ckpt=ckpt, img=img, inferencer=inferencer,
                tmp=tmp)


def test_contract_one_image_several_sentences(tiny):
    out = tiny['inferencer'](tiny['img'], SENTENCES[:3])
    assert set(out) == {'predictions', 'visualization'}
    assert out['visualization'] == []
    assert [p['text'] for p in out['predictions']] == SENTENCES[:3]
    for p in out['predictions']:
        assert set(p) == {'mask', 'prob', 'text'}
        assert p['mask'].shape == (90, 130) and p['mask'].dtype == np.uint8
        assert set(np.unique(p['mask'])) <= {0, 1}
        assert p['prob'].shape == (90, 130)
        assert p['prob'].dtype == np.float32
        assert 0 <= p['prob'].min() and p['prob'].max() <= 1
        # 2-channel head: the mask is the argmax, i.e. prob > 0.5
        np.testing.assert_array_equal(p['mask'][np.abs(p['prob'] - .5) >
                                                1e-6],
                                      (p['prob'] > .5)[np.abs(p['prob'] -
                                                              .5) > 1e-6])
    # the sentences reach the model: their probability maps differ
    assert not np.allclose(out['predictions'][0]['prob'],
                           out['predictions'][1]['prob'])


def test_arrays_paths_and_lists(tiny):
    inf = tiny['inferencer']
    bgr = cv2.imread(tiny['img'])
    from_path = inf(tiny['img'], SENTENCES[0])['predictions'][0]
    from_array = inf(bgr, SENTENCES[0])['predictions'][0]
    np.testing.assert_array_equal(from_path['mask'], from_array['mask'])
    np.testing.assert_allclose(from_path['prob'], from_array['prob'])
    other = _image(40, 70, seed=1)
    out = inf([tiny['img'], other], SENTENCES[:2], batch_size=2)
    shapes = [p['mask'].shape for p in out['predictions']]
    assert shapes == [(90, 130), (40, 70)]
    np.testing.assert_allclose(out['predictions'][0]['prob'],
                               from_path['prob'], atol=1e-6)


def test_out_dir_and_visualization(tiny, tmp_path):
    inf = tiny['inferencer']
    twin = tmp_path / 'b'
    twin.mkdir()
    same_stem = str(twin / 'shapes.png')  # another image, same stem
    cv2.imwrite(same_stem, _image(50, 50, seed=2))
    out = inf([tiny['img']], SENTENCES[:2], out_dir=str(tmp_path / 'o'),
              return_vis=True)
    inf([same_stem, _image(30, 40)], SENTENCES[:2],
        out_dir=str(tmp_path / 'o2'))
    assert sorted(os.listdir(tmp_path / 'o' / 'vis')) == [
        'shapes_0.png', 'shapes_1.png']
    assert sorted(os.listdir(tmp_path / 'o2' / 'pred')) == [
        'image1_0.png', 'shapes_0.png']
    for k, pred in enumerate(out['predictions']):
        saved = cv2.imread(str(tmp_path / 'o' / 'pred' / f'shapes_{k}.png'),
                           cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(saved, pred['mask'] * 255)
        vis = out['visualization'][k]
        # (H, W, 3) RGB; RefSegLocalVisualizer appends a caption band below
        assert vis.shape[0] >= 90 and vis.shape[1:] == (130, 3)
        assert vis.dtype == np.uint8
        on_disk = cv2.imread(str(tmp_path / 'o' / 'vis' / f'shapes_{k}.png'))
        np.testing.assert_array_equal(on_disk[..., ::-1], vis)
    # the overlay changes the image where the mask is (RGB = BGR reversed)
    rgb = cv2.imread(tiny['img'])[..., ::-1]
    mask = out['predictions'][0]['mask'].astype(bool)
    mask[:30] = False  # below the fallback's caption band
    if mask.any():
        assert (out['visualization'][0][:90][mask] != rgb[mask]).any()


def test_same_stem_in_one_call_is_not_overwritten(tiny, tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    a.mkdir(), b.mkdir()
    cv2.imwrite(str(a / 'x.png'), _image(20, 20))
    cv2.imwrite(str(b / 'x.png'), _image(20, 20, seed=3))
    tiny['inferencer']([str(a / 'x.png'), str(b / 'x.png')],
                       SENTENCES[:2], out_dir=str(tmp_path / 'o'))
    assert sorted(os.listdir(tmp_path / 'o' / 'pred')) == [
        'x-1_0.png', 'x_0.png']


# ------------------------------------------------------------ bad input
def test_missing_image_named(tiny, tmp_path):
    missing = str(tmp_path / 'nope.jpg')
    with pytest.raises(FileNotFoundError, match='nope.jpg'):
        tiny['inferencer']([tiny['img'], missing], SENTENCES[:2],
                           out_dir=str(tmp_path / 'o'))
    assert not osp.exists(tmp_path / 'o')  # nothing half-written


def test_unreadable_image_named(tiny, tmp_path):
    bad = tmp_path / 'broken.png'
    bad.write_bytes(b'not an image at all')
    with pytest.raises(ValueError, match='broken.png'):
        tiny['inferencer'](str(bad), SENTENCES[0])
    with pytest.raises(ValueError, match=r'images\[0\].*\(5, 5\)'):
        tiny['inferencer'](np.zeros((5, 5), np.uint8), SENTENCES[0])


@pytest.mark.parametrize('text', ['', '   \n'])
def test_empty_sentence_named(tiny, text):
    with pytest.raises(ValueError, match=r'sentence 1 of image .*empty'):
        tiny['inferencer'](tiny['img'], [SENTENCES[0], text])


def test_text_count_mismatch_named(tiny):
    arr = _image(20, 20)
    with pytest.raises(ValueError, match='2 images and 3 sentences'):
        tiny['inferencer']([arr, arr], SENTENCES[:3])
    with pytest.raises(ValueError, match='2 images and 1 sentences'):
        tiny['inferencer']([arr, arr], SENTENCES[0])
    with pytest.raises(TypeError, match='must be a str'):
        tiny['inferencer'](arr, [SENTENCES[0], 3])


def test_checkpoint_of_another_model_named(tiny, tmp_path):
    other = Config.fromfile(DEMO_CFG)  # the full-width baseline
    wrong = str(tmp_path / 'wide.pth')
    model = MODELS.build(other.model)
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith('text_encoder')}
    torch.save({'state_dict': state}, wrong)
    with pytest.raises(ValueError) as err:
        RefSegInferencer(tiny['cfg'], weights=wrong, device='cpu')
    msg = str(err.value)
    assert 'wide.pth' in msg and 'missing keys' in msg
    assert 'text_encoder.' in msg  # first missing keys are named
    assert 'size mismatch' in msg and 'backbone.' in msg  # both shapes


def test_missing_checkpoint_named(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match='absent.pth'):
        RefSegInferencer(tiny['cfg'], weights=str(tmp_path / 'absent.pth'),
                         device='cpu')


def test_random_weights_warn(tiny):
    with pytest.warns(UserWarning, match='RANDOM weights'):
        RefSegInferencer(tiny['cfg'], device='cpu')


def test_config_by_name():
    name = osp.basename(DEMO_CFG)[:-3]
    assert osp.samefile(find_config(name), DEMO_CFG)
    assert osp.samefile(find_config(name + '.py'), DEMO_CFG)
    with pytest.raises(FileNotFoundError, match='ris-baseline_r18'):
        find_config('ris-baseline_r18-minilm_1xb16-2k_refshape')


# ------------------------------------------- encode the image once (#13)
DEMOS = sorted(glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')))


@pytest.mark.parametrize('config', DEMOS, ids=lambda p: osp.basename(p)[:12])
def test_several_sentences_equal_separate_calls(config, tmp_path):
    cfg = Config.fromfile(config)
    model = name_seeded_(MODELS.build(cfg.model))
    ckpt = str(tmp_path / 'w.pth')
    torch.save({'state_dict': model.state_dict()}, ckpt)
    inf = RefSegInferencer(cfg, weights=ckpt, device='cpu')
    calls = []
    inf.model.backbone.register_forward_hook(lambda *a: calls.append(1))
    img = _image(100, 140)
    joint = inf(img, SENTENCES, batch_size=3)['predictions']
    # text-independent backbones run once; others once per chunk of 3
    independent = inf.model.text_input is None
    assert len(calls) == (1 if independent else 2)
    for text, pred in zip(SENTENCES, joint):
        alone = inf(img, text)['predictions'][0]
        assert alone['text'] == pred['text'] == text
        np.testing.assert_array_equal(pred['mask'], alone['mask'])
        # batch 3 vs 1: float32 kernels differ in the last bits
        np.testing.assert_allclose(pred['prob'], alone['prob'], atol=1e-4)
    assert len(calls) == (1 if independent else 2) + len(SENTENCES)
