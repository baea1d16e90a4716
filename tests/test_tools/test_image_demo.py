"""tools/image_demo.py: area per sentence, overlays, bad input named."""
import os.path as osp
import re

import cv2
import numpy as np
import pytest
import torch

from mmseg.registry import MODELS
from ris_plugins.apis import RefSegInferencer

from ..conftest import load_tool, name_seeded_, tiny_cfg

TEXTS = ['the small red circle', 'the blue square on the left']


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('demo')
    cfg = tiny_cfg(str(tmp), str(tmp))
    config = str(tmp / 'tiny.py')
    cfg.dump(config)
    model = name_seeded_(MODELS.build(cfg.model))
    ckpt = str(tmp / 'tiny.pth')
    torch.save({'state_dict': model.state_dict()}, ckpt)
    img = str(tmp / 'photo.png')
    rng = np.random.RandomState(0)
    cv2.imwrite(img, (rng.rand(60, 80, 3) * 255).astype(np.uint8))
    return dict(config=config, ckpt=ckpt, img=img, tmp=tmp)


def test_prints_area_and_writes_overlays(setup, tmp_path, capsys):
    demo = load_tool('image_demo.py')
    out = str(tmp_path / 'out.png')
    argv = [setup['img'], setup['config'], setup['ckpt'], '--out-file', out]
    for t in TEXTS:
        argv += ['--text', t]
    assert demo.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()[-2:]
    ref = RefSegInferencer(setup['config'], weights=setup['ckpt'],
                           device='cpu')(setup['img'], TEXTS,
                                         return_vis=True)
    for k, (line, pred) in enumerate(zip(lines, ref['predictions'])):
        area = int(pred['mask'].sum())
        match = re.search(r'mask (\d+) pixels \(([\d.]+)% of 80x60\)', line)
        assert match and int(match.group(1)) == area, line
        assert float(match.group(2)) == pytest.approx(100 * area / 4800,
                                                      abs=0.005)
        path = str(tmp_path / f'out_{k}.png')
        assert path in line
        np.testing.assert_array_equal(
            cv2.imread(path)[..., ::-1], ref['visualization'][k])


def test_one_sentence_writes_out_file(setup, tmp_path):
    demo = load_tool('image_demo.py')
    out = str(tmp_path / 'one.png')
    assert demo.main([setup['img'], setup['config'], setup['ckpt'],
                      '--text', TEXTS[0], '--out-file', out]) == 0
    img = cv2.imread(out)  # a caption band may follow the 60 image rows
    assert img.shape[0] >= 60 and img.shape[1:] == (80, 3)


@pytest.mark.parametrize('case', ['image', 'unreadable', 'empty', 'ckpt'])
def test_bad_input_named(setup, tmp_path, capsys, case):
    demo = load_tool('image_demo.py')
    img, ckpt, text = setup['img'], setup['ckpt'], TEXTS[0]
    if case == 'image':
        img = expect = str(tmp_path / 'missing.jpg')
    elif case == 'unreadable':
        img = expect = str(tmp_path / 'garbage.png')
        open(img, 'wb').write(b'\x00garbage')
    elif case == 'empty':
        text, expect = ' ', 'empty'
    else:  # a checkpoint of another model
        ckpt = expect = str(tmp_path / 'other.pth')
        torch.save({'state_dict': {'head.weight': torch.zeros(1)}}, ckpt)
    out = str(tmp_path / 'o.png')
    assert demo.main([img, setup['config'], ckpt, '--text', text,
                      '--out-file', out]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and expect in err
    assert not osp.exists(out)
