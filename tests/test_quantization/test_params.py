"""Parameter files: bits and shapes recorded and checked on every load,
per-group counts from the layer, unreadable and old files."""
import os.path as osp

import pytest
import torch

from ris_plugins.quantization import (calibrate, load_quant_file,
                                      load_quant_params, quant_state_dict,
                                      quantize_model, read_quant_params,
                                      save_quant_params)
from ris_plugins.quantization.params import StaleFormatError

from ..conftest import batch, calibrate_on, qcfg, tiny_lavt

W_KEY = 'backbone.stages.0.blocks.0.attn.w_msa.qkv.w_quantizer.scale'
HEAD_KEY = 'backbone.stages.1.blocks.0.attn.w_msa.matmul1.a_quantizer.scale'


@pytest.fixture(scope='module')
def calibrated8():
    """A tiny LAVT calibrated at W8A8: (model, state, params)."""
    model, data = tiny_lavt(), batch()
    state = quantize_model(model, qcfg(8))
    calibrate_on(model, state, data)
    return model, state, quant_state_dict(state)


def test_saved_file_records_bits_and_every_shape(calibrated8, tmp_path):
    _, state, params = calibrated8
    path = str(tmp_path / 'p.pth')
    save_quant_params(path, state, dict(note='x'))
    raw = torch.load(path, map_location='cpu', weights_only=True)
    assert set(raw) == {'meta', 'bits', 'shapes', 'state_dict'}
    names = [n for n, _ in state.quantizers()]
    assert raw['bits'] == {n: 8 for n in names} and len(names) > 50
    assert raw['shapes'] == {k: list(v.shape) for k, v in params.items()}
    # qkv of the tiny Swin (embed 16): 48 output channels
    assert raw['shapes'][W_KEY] == [48]
    assert raw['meta']['note'] == 'x'


def test_other_bit_width_is_refused_naming_file_quantizer_and_values(
        calibrated8, tmp_path):
    _, state, _ = calibrated8
    path = str(tmp_path / 'w8a8.pth')
    save_quant_params(path, state)
    fresh = quantize_model(tiny_lavt(), qcfg(4))
    with pytest.raises(ValueError, match=(
            rf"{path}: quantizer '[\w.]+' was calibrated at 8 bits but the "
            r'quantized model uses 4 bits')):
        load_quant_file(fresh, path)
    assert not any(q.calibrated for _, q in fresh.quantizers())


@pytest.mark.parametrize('key, channels', [(W_KEY, 48), (HEAD_KEY, 2)])
def test_wrong_per_group_shape_is_refused_at_load(calibrated8, key,
                                                  channels):
    # before calibration the expected count comes from the layer: the
    # weight's output channels, the attention's number of heads
    _, _, params = calibrated8
    bad = dict(params)
    bad[key] = params[key][:-1].clone()
    fresh = quantize_model(tiny_lavt(), qcfg(8))
    with pytest.raises(ValueError, match=(
            rf"params.pth do not fit the quantized model: .*'scale' has "
            rf'shape \({channels - 1},\) but UniformQuantizer in quantizer '
            rf"'{key.rpartition('.')[0]}' expects \({channels},\)")):
        load_quant_params(fresh, bad, 'params.pth')
    assert not any(q.calibrated for _, q in fresh.quantizers())


def test_tampered_shape_record_and_empty_parameter(calibrated8, tmp_path):
    _, state, params = calibrated8
    path = str(tmp_path / 'p.pth')
    save_quant_params(path, state)
    raw = torch.load(path, weights_only=True)
    raw['shapes'][W_KEY] = [47]
    torch.save(raw, path)
    with pytest.raises(ValueError, match=rf"{path}: parameter '{W_KEY}' has "
                       r'shape \(48,\) but the file records \(47,\)'):
        read_quant_params(path)
    raw['shapes'][W_KEY] = [0]
    raw['state_dict'][W_KEY] = torch.empty(0)
    torch.save(raw, path)
    with pytest.raises(ValueError, match=rf"parameter '{W_KEY}' is empty"):
        read_quant_params(path)


def test_old_layout_and_unreadable_files_name_the_file(calibrated8,
                                                       tmp_path):
    _, _, params = calibrated8
    old = str(tmp_path / 'old.pth')
    torch.save(dict(meta={}, state_dict=params), old)
    with pytest.raises(StaleFormatError, match=rf'{old} was written by an '
                       'older version and records no bit widths'):
        read_quant_params(old)
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    with pytest.raises(ValueError, match=rf'cannot read quantization '
                       rf'parameter file {empty}'):
        read_quant_params(str(empty))
    torch.save([1, 2], str(tmp_path / 'list.pth'))
    with pytest.raises(ValueError, match=r'list.pth is not a quantization '
                       r'parameter file'):
        read_quant_params(str(tmp_path / 'list.pth'))


def test_calibrate_without_samples_is_an_error():
    model = tiny_lavt()
    state = quantize_model(model, qcfg(8))
    with pytest.raises(ValueError, match='no calibration samples'):
        calibrate(state, lambda i: None, [])
    assert osp.basename(__file__)  # module imported fine


def test_content_hashes(tmp_path):
    import copy
    import hashlib

    from ris_plugins.quantization import file_sha256, weights_sha256
    path = tmp_path / 'blob.bin'
    data = bytes(range(256)) * 5000  # > one 1 MiB read chunk
    path.write_bytes(data)
    assert file_sha256(str(path), chunk=1000) == hashlib.sha256(
        data).hexdigest()
    model = tiny_lavt()
    same = copy.deepcopy(model)
    assert weights_sha256(same) == weights_sha256(model)
    with torch.no_grad():
        next(same.parameters()).view(-1)[0] += 1e-3
    assert weights_sha256(same) != weights_sha256(model)
