"""tools/model_converters/clip_to_ris.py: --config writes the layout every
CLIP-based config expects (CRIS, ETRIS, BarLeRIa, mix), and OpenAI's
TorchScript archives are read without torch.jit.load (no code from the
file runs)."""
import io
import os
import os.path as osp
import pickle
import sys
import zipfile

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.utils.state_dict import load_state_dict_strict

from ..conftest import ROOT, load_tool

DEMO = osp.join(ROOT, 'configs', 'demo')
MIX = osp.join(ROOT, 'configs', 'mix')
# (config, where its CLIP visual / text towers live; None: not CLIP)
CONFIGS = [
    (osp.join(DEMO, 'etris-small_tiny-vit-clip_1xb16-2k_refshapes-160x160.py'),
     'backbone.visual.', 'backbone.text.'),
    (osp.join(DEMO,
              'barleria-small_tiny-vit-clip_1xb16-2k_refshapes-160x160.py'),
     'backbone.visual.', 'backbone.text.'),
    (osp.join(DEMO, 'cris-small_tiny-rn-minilm_1xb16-2k_refshapes-160x160.py'),
     'backbone.', None),
    (osp.join(MIX, 'mix-small_barleria-snf-lim_query-head_tiny-vit-clip_'
              '1xb16-2k_refshapes-160x160.py'),
     'backbone.visual.', 'backbone.text.'),
]


def converter():
    return load_tool('model_converters/clip_to_ris.py')


def openai_state(model, visual, text):
    """The OpenAI-layout CLIP state dict of ``model``'s CLIP towers."""
    conv = converter()
    default = {}
    for key, value in model.state_dict().items():
        for prefix, ours in ((visual, 'backbone.'), (text, 'text_encoder.')):
            if prefix and key.startswith(prefix):
                default[ours + key[len(prefix):]] = value
                break
    return conv.to_openai(default)


@pytest.mark.parametrize('config,visual,text', CONFIGS,
                         ids=lambda x: osp.basename(x) if x else str(x))
def test_config_layout(tmp_path, monkeypatch, config, visual, text):
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(config).model)
    state = model.state_dict()
    openai = openai_state(model, visual, text)
    if text is None:  # a CLIP file always has a text tower
        torch.manual_seed(1)
        text_model = MODELS.build(dict(type='RefCLIPTextEncoder', config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2)))
        openai.update(converter().to_openai(
            {'text_encoder.' + k: v
             for k, v in text_model.state_dict().items()}))
    src, dst = tmp_path / 'clip.pt', tmp_path / 'clip_ris.pth'
    torch.save(openai, src)
    monkeypatch.setattr(sys, 'argv', ['clip_to_ris.py', str(src), str(dst),
                                      '--config', config])
    converter().main()
    out = torch.load(dst, map_location='cpu', weights_only=True)
    converted = out['state_dict']
    prefixes = tuple(p for p in (visual, text) if p)
    assert all(k.startswith(prefixes) for k in converted)
    if text is None:
        assert not [k for k in converted if 'text_encoder' in k]
    # load_from takes the file as it is: strict on the CLIP towers.
    rest = {k: v for k, v in state.items() if k not in converted}
    fresh = MODELS.build(Config.fromfile(config).model)
    load_state_dict_strict(fresh, {**rest, **converted}, str(dst))
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_config_without_clip_is_refused(tmp_path):
    config = osp.join(
        DEMO, 'ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py')
    with pytest.raises(ValueError, match='no CLIP tower'):
        converter().layout_from_config(config)


class _TinyClip(nn.Module):
    """A traced stand-in for OpenAI's archive: fp16 weights, a packed
    nn.MultiheadAttention, BN buffers and a non-parameter attn_mask
    tensor attribute (as CLIP's text blocks have)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.attn = nn.MultiheadAttention(8, 2)
        self.attn_mask = torch.full((3, 3), float('-inf')).triu(1)
        self.text_projection = nn.Parameter(torch.randn(8, 4))

    def forward(self, img, txt):
        x = self.attn(txt, txt, txt, attn_mask=self.attn_mask)[0]
        return self.bn1(self.conv1(img)).sum() + (x @ self.text_projection)


def traced_archive(path):
    torch.manual_seed(0)
    model = _TinyClip().eval()
    torch.jit.trace(model, (torch.randn(1, 3, 8, 8), torch.randn(3, 1, 8))
                    ).save(str(path))


def test_torchscript_read_without_jit_load(tmp_path, monkeypatch):
    path = tmp_path / 'RN_tiny.pt'
    traced_archive(path)
    expected = torch.jit.load(str(path)).state_dict()

    def refuse(*args, **kwargs):
        raise AssertionError('torch.jit.load runs code from the file')

    monkeypatch.setattr(torch.jit, 'load', refuse)
    got = converter().load_openai(str(path))
    assert list(got) == list(expected)  # attn_mask is not state
    for key, value in expected.items():
        assert torch.equal(got[key], value) and got[key].dtype == \
            value.dtype, key


class _Hostile:

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker, )


def test_torchscript_archive_with_a_hostile_global_is_refused(tmp_path):
    """data.pkl replaced by a pickle that calls os.mkdir: refused, the
    error names the file and the global, nothing runs."""
    good, evil = tmp_path / 'good.pt', tmp_path / 'evil.pt'
    traced_archive(good)
    marker = str(tmp_path / 'ran')
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, 'w') as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith('/data.pkl'):
                buf = io.BytesIO()
                pickle.dump({'x': _Hostile(marker)}, buf, protocol=2)
                data = buf.getvalue()
            zout.writestr(item, data)
    with pytest.raises(pickle.UnpicklingError,
                       match="evil.pt.*refused global 'posix.mkdir'"):
        converter().load_openai(str(evil))
    assert not osp.exists(marker)


def test_plain_state_dict_and_bad_files(tmp_path):
    conv = converter()
    plain = tmp_path / 'plain.pth'
    torch.save({'state_dict': {'a': torch.ones(1)}}, plain)
    assert set(conv.load_openai(str(plain))) == {'a'}
    empty = tmp_path / 'empty.pt'
    empty.write_bytes(b'')
    with pytest.raises(RuntimeError, match='empty.pt'):
        conv.load_openai(str(empty))
