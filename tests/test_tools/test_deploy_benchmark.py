"""tools/analysis_tools/deploy_benchmark.py on the tiny model: every
requested setting gets a row with speed, the size of the file it wrote and
the worker process's own peak memory."""
import json
import os.path as osp

import pytest

from ..conftest import load_tool

pytest.importorskip('onnxruntime')


@pytest.mark.slow
def test_benchmark_rows(tiny_model_cfg, tmp_path):
    cfg_path = str(tmp_path / 'tiny.py')
    tiny_model_cfg.dump(cfg_path)
    tool = load_tool('analysis_tools/deploy_benchmark.py')
    out = str(tmp_path / 'bench')
    settings = ['torch-fp32', 'ort-fp32', 'ort-w8a8']
    assert tool.main(['--model', 'tiny', cfg_path, 'random', '--settings',
                      *settings, '--calib-samples', '2', '--runs', '2',
                      '--warmup', '1', '--threads', '1', '--out',
                      out]) == 0
    with open(osp.join(out, 'deploy_benchmark.json')) as f:
        rows = {r['setting']: r for r in json.load(f)}
    assert set(rows) == set(settings)
    for setting, row in rows.items():
        assert row['ms_1'] > 0 and row['rss_mib'] > 0
    # measured files: the int8 ONNX file is smaller than the FP32 one
    assert rows['ort-w8a8']['file_mib'] < rows['ort-fp32']['file_mib']
    assert rows['ort-w8a8']['info']['folded']['int8'] > 0


@pytest.mark.slow
def test_benchmark_accuracy_columns(refshapes_root, tmp_path):
    """``--val-samples``: every setting is scored on the same val samples
    (PyTorch settings run the model itself, ONNX Runtime ones run the file
    inside the config's pre/post-processing); ONNX Runtime FP32 equals
    PyTorch FP32 to float round-off, so their masks and metrics agree."""
    from ..conftest import tiny_cfg
    cfg = tiny_cfg(refshapes_root, str(tmp_path / 'work'))
    cfg_path = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_path)
    tool = load_tool('analysis_tools/deploy_benchmark.py')
    out = str(tmp_path / 'bench')
    settings = ['torch-fp32', 'ort-fp32', 'torch-w8a8', 'ort-w8a8']
    assert tool.main(['--model', 'tiny', cfg_path, 'random', '--settings',
                      *settings, '--calib-samples', '2', '--runs', '1',
                      '--warmup', '0', '--threads', '1', '--val-samples',
                      '6', '--out', out]) == 0
    with open(osp.join(out, 'deploy_benchmark.json')) as f:
        rows = {r['setting']: r for r in json.load(f)}
    for row in rows.values():
        assert 0 <= row['mIoU'] <= 100 and 0 <= row['oIoU'] <= 100
    assert rows['ort-fp32']['mIoU'] == rows['torch-fp32']['mIoU']
    assert rows['ort-fp32']['oIoU'] == rows['torch-fp32']['oIoU']
