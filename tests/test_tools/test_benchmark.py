"""tools/analysis_tools/benchmark.py and get_flops.py on a tiny config."""
import json

import pytest
import torch

from mmseg.registry import MODELS

from ..conftest import load_tool, tiny_cfg


@pytest.fixture(scope='module')
def config(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('bench')
    cfg = tiny_cfg(str(tmp), str(tmp))
    path = str(tmp / 'tiny.py')
    cfg.dump(path)
    return path


def test_benchmark_forward(config, tmp_path, capsys):
    bench = load_tool('analysis_tools/benchmark.py')
    out = str(tmp_path / 'speed.json')
    res = bench.main([config, '--repeat', '3', '--warmup', '1', '--out',
                      out])
    assert res['ms_per_image'] > 0
    assert res['ms_per_image'] * res['images_per_s'] == pytest.approx(1e3)
    assert res['min_ms'] <= res['ms_per_image'] <= res['max_ms']
    assert res['input_hw'] == [64, 64] and res['text_length'] == 20
    assert res['threads'] == torch.get_num_threads()
    assert 'random weights' in capsys.readouterr().out
    assert json.load(open(out))['ms_per_image'] == res['ms_per_image']


def test_benchmark_sentences(config):
    bench = load_tool('analysis_tools/benchmark.py')
    res = bench.main([config, '--sentences', '3', '--repeat', '1',
                      '--warmup', '0'])
    assert res['sentences'] == 3 and res['image_encoded_once'] is True
    assert res['speedup'] == pytest.approx(
        res['separate_calls_s'] / res['one_call_s'])


def test_benchmark_checkpoint_must_fit(config, tmp_path):
    bench = load_tool('analysis_tools/benchmark.py')
    bad = str(tmp_path / 'bad.pth')
    torch.save({'state_dict': {'x': torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match='bad.pth'):
        bench.main([config, bad, '--repeat', '1', '--warmup', '0'])


def test_get_flops_scales_with_the_image(config, tmp_path):
    flops = load_tool('analysis_tools/get_flops.py')
    small = flops.main([config, '--shape', '64', '64'])
    large = flops.main([config, '--shape', '128', '128', '--out',
                        str(tmp_path / 'f.json')])
    # parameters: counted independently of the flop counter
    from mmengine.config import Config
    model = MODELS.build(Config.fromfile(config).model)
    assert small['params'] == sum(p.numel() for p in model.parameters())
    mods = small['modules']
    assert set(mods) == {'backbone', 'text_encoder', 'fusion',
                         'decode_head'}
    assert sum(m['flops'] for m in mods.values()) == small['flops']
    # convolutions scale with the pixel count; the text does not see it
    assert large['modules']['backbone']['flops'] == \
        4 * mods['backbone']['flops']
    assert large['modules']['text_encoder']['flops'] == \
        mods['text_encoder']['flops'] > 0
    assert small['text_length'] == 20
