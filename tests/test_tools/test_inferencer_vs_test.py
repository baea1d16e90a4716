"""tools/analysis_tools/inferencer_vs_test.py: RefSegInferencer on image
files and sentences scores the same as the Runner's test loop."""
import json

import pytest
import torch

from mmseg.registry import MODELS

from ..conftest import load_tool, tiny_cfg


@pytest.fixture(scope='module')
def files(tmp_path_factory, refshapes_root):
    tmp = tmp_path_factory.mktemp('ivt')
    cfg = tiny_cfg(refshapes_root, str(tmp))
    config = str(tmp / 'tiny.py')
    cfg.dump(config)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    # a random classifier wide enough that masks vary across the image
    torch.nn.init.normal_(model.decode_head.conv_seg.weight, std=2.0)
    ckpt = str(tmp / 'tiny.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), ckpt)
    return config, ckpt


def test_inferencer_agrees_with_the_test_loop(files, tmp_path, capsys):
    tool = load_tool('analysis_tools/inferencer_vs_test.py')
    out = str(tmp_path / 'agree.json')
    res = tool.main([*files, '--num', '6', '--out', out])
    assert res['num'] == 6
    loop, inf = res['test_loop'], res['inferencer']
    assert set(loop) >= {'oIoU', 'mIoU', 'Pr@0.5'}
    assert loop['oIoU'] > 0  # random masks overlap: not a trivial 0 == 0
    for key in loop:
        assert inf[key] == pytest.approx(loop[key], abs=1e-6), key
    assert res['max_diff'] < 1e-6
    assert 0.0 <= res['iou_ge_0_5'] <= 1.0
    assert json.load(open(out))['test_loop'] == loop
    printed = capsys.readouterr().out
    assert '| RefSegInferencer |' in printed and 'IoU >= 0.5' in printed


def test_bad_sample_count_is_named(files):
    tool = load_tool('analysis_tools/inferencer_vs_test.py')
    with pytest.raises(SystemExit):
        tool.main([*files, '--num', '0'])
