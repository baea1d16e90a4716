"""tools/deployment/pytorch2onnx.py: FP and QDQ export of a checkpoint, the
ONNX file as the inferencer's model, and refused parameter files."""
import copy

import numpy as np
import pytest
import torch

from mmseg.registry import MODELS
from ris_plugins.quantization import (calibrate, quantize_model,
                                      save_quant_params)
from ris_plugins.utils.synthetic import synthetic_inputs

from ..conftest import MINMAX, load_tool

pytest.importorskip('onnxruntime')


@pytest.fixture
def tiny_files(tiny_model_cfg, tmp_path):
    """(config file, checkpoint, model) of the tiny baseline."""
    cfg_path = tmp_path / 'tiny.py'
    tiny_model_cfg.dump(str(cfg_path))
    torch.manual_seed(0)
    model = MODELS.build(tiny_model_cfg.model).eval()
    ckpt = tmp_path / 'ckpt.pth'
    torch.save({'state_dict': model.state_dict()}, str(ckpt))
    return str(cfg_path), str(ckpt), model


def test_fp_export_and_inferencer(tiny_files, tmp_path, capsys):
    """The tool prints the ORT-vs-PyTorch difference; the inferencer given
    the .onnx file returns the masks of the inferencer given the
    checkpoint."""
    cfg_path, ckpt, _ = tiny_files
    tool = load_tool('deployment/pytorch2onnx.py')
    out = str(tmp_path / 'tiny.onnx')
    assert tool.main([cfg_path, ckpt, '--out', out]) == 0
    printed = capsys.readouterr().out
    diff = float(printed.split('logits = ')[-1].split()[0])
    assert diff <= 1e-4
    from ris_plugins.apis import RefSegInferencer
    img = np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)
    texts = ['the red circle', 'the big blue square on the left']
    ref = RefSegInferencer(cfg_path, weights=ckpt, device='cpu')(img, texts)
    dep = RefSegInferencer(cfg_path, weights=out, device='cpu')(img, texts)
    for a, b in zip(ref['predictions'], dep['predictions']):
        np.testing.assert_allclose(a['prob'], b['prob'], atol=1e-4)


def test_bad_ptq_params_are_named(tiny_files, tiny_model_cfg,
                                  tmp_path):
    """A parameter file that is not one, or one calibrated for another
    checkpoint, is refused naming the file, and no .onnx is written."""
    cfg_path, ckpt, model = tiny_files
    tool = load_tool('deployment/pytorch2onnx.py')
    out = tmp_path / 'm.onnx'
    bad = tmp_path / 'not_params.pth'
    torch.save({'weights': torch.zeros(3)}, str(bad))
    with pytest.raises(ValueError, match='not_params.pth'):
        tool.main([cfg_path, ckpt, '--out', str(out), '--ptq-params',
                   str(bad)])
    qmodel = copy.deepcopy(model)
    state = quantize_model(qmodel, dict(MINMAX, w_bits=8, a_bits=8))
    inputs = synthetic_inputs(tiny_model_cfg, 2)
    calibrate(state, lambda i: qmodel(*inputs[i]), range(2))
    params = tmp_path / 'ptq_params.pth'
    save_quant_params(str(params), state, dict(
        checkpoint='other.pth', checkpoint_sha256='file:0123',
        quant_cfg='{}'))
    with pytest.raises(ValueError, match='ptq_params.pth.*other.pth'):
        tool.main([cfg_path, ckpt, '--out', str(out), '--ptq-params',
                   str(params)])
    assert not out.exists()


@pytest.mark.slow
def test_qdq_export_from_ptq_params(tiny_files, tiny_model_cfg,
                                    refshapes_root, tmp_path, capsys):
    """--ptq-params: the quant_cfg comes from the file, output ranges from
    the training split; ONNX Runtime runs integer kernels."""
    import json

    from ris_plugins.quantization import file_sha256
    cfg_path, ckpt, model = tiny_files
    qc = dict(MINMAX, w_bits=8, a_bits=8)
    qmodel = copy.deepcopy(model)
    state = quantize_model(qmodel, qc)
    inputs = synthetic_inputs(tiny_model_cfg, 2)
    calibrate(state, lambda i: qmodel(*inputs[i]), range(2))
    params = tmp_path / 'ptq_params.pth'
    save_quant_params(str(params), state, dict(
        checkpoint=ckpt, checkpoint_sha256='file:' + file_sha256(ckpt),
        quant_cfg=json.dumps(qc)))
    tool = load_tool('deployment/pytorch2onnx.py')
    out = str(tmp_path / 'w8a8.onnx')
    assert tool.main([cfg_path, ckpt, '--out', out, '--ptq-params',
                      str(params), '--range-samples', '4', '--data-root',
                      refshapes_root]) == 0
    printed = capsys.readouterr().out
    integer = int(printed.split("'integer': ")[1].split(',')[0])
    assert integer > 0
    # W8A8: the word-embedding table is stored int8 by default
    assert ("embedding tables {'text_encoder.bert.embeddings."
            "word_embeddings': 'int8'}") in printed
