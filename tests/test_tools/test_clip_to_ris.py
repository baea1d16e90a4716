"""tools/model_converters/clip_to_ris.py: --config writes the layout every
CLIP-based config expects (CRIS, ETRIS, BarLeRIa, mix), and OpenAI's
TorchScript archives are read without torch.jit.load (no code from the
file runs); the ResNet and ViT towers round-trip through OpenAI's layout
(packed q / k / v, fp16 storage) and converted files are checked against a
config."""
import io
import os
import os.path as osp
import pickle
import sys
import zipfile

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from torch import Tensor

from mmseg.registry import MODELS
from ris_plugins.utils.state_dict import load_state_dict_strict

from ..conftest import (CRIS_TINY_TEXT, ROOT, TINY_CLIP_VIT_ARCH, load_tool,
                        text_of, tiny_cris, tiny_vit, token_samples, tokens)

DEMO = osp.join(ROOT, 'configs', 'demo')
MIX = osp.join(ROOT, 'configs', 'mix')
CRIS_DEMO_CFG = osp.join(
    DEMO, 'cris-small_tiny-rn-minilm_1xb16-2k_refshapes-160x160.py')
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


def test_resnet_round_trip_through_openai_layout():
    conv = converter()
    model = tiny_cris().eval()
    state = model.state_dict()
    openai = conv.to_openai(state)
    # The OpenAI layout (clip/model.py names and shapes).
    assert openai['transformer.resblocks.1.attn.in_proj_weight'].shape == (
        96, 32)
    assert openai['transformer.resblocks.0.attn.in_proj_bias'].shape == (
        96, )
    assert openai['text_projection'].shape == (32, 48)  # x @ P
    assert openai['positional_embedding'].shape == (77, 32)
    for key in ('visual.conv1.weight', 'visual.layer1.0.downsample.0.weight',
                'visual.attnpool.positional_embedding',
                'visual.attnpool.q_proj.weight', 'visual.attnpool.c_proj.bias',
                'token_embedding.weight', 'ln_final.weight',
                'transformer.resblocks.1.mlp.c_fc.weight',
                'transformer.resblocks.1.ln_2.bias'):
        assert key in openai, key
    assert not [k for k in openai if 'connect' in k]
    # q / k / v packed in that order.
    torch.testing.assert_close(
        openai['transformer.resblocks.0.attn.in_proj_weight'][32:64],
        state['text_encoder.clip.text_model.encoder.layers.0.self_attn.'
              'k_proj.weight'])
    openai = {k: v.half() if v.is_floating_point() else v
              for k, v in openai.items()}  # OpenAI ships fp16
    openai.update(logit_scale=torch.tensor(4.6), input_resolution=224)
    converted = conv.convert_clip(openai)
    clip_keys = {k for k in state if k.startswith(
        ('backbone.', 'text_encoder.')) and '.connect.' not in k}
    assert set(converted) == clip_keys
    assert all(v.dtype != torch.float16 for v in converted.values())
    fresh = tiny_cris()
    torch.manual_seed(123)
    for p in fresh.parameters():
        nn.init.normal_(p)
    rest = {k: v for k, v in state.items() if k not in converted}
    load_state_dict_strict(fresh, {**rest, **converted}, 'round trip')
    # fp16 storage loses precision; compare with the fp16-rounded model.
    model.load_state_dict({k: v.half().float() if k in converted and
                           v.is_floating_point() else v
                           for k, v in state.items()})
    fresh.eval()
    img = torch.randn(2, 3, 64, 64)
    ds = token_samples(tokens(6, 4), ori=(48, 64), pad=(0, 0, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(fresh(img, *text_of(ds)),
                                   model(img, *text_of(ds)))


def test_converter_inputs_and_errors(tmp_path):
    conv = converter()
    scripted = torch.jit.trace(nn.Linear(3, 2), torch.randn(1, 3))
    path = str(tmp_path / 'scripted.pt')
    scripted.save(path)
    assert set(conv.load_openai(path)) == {'weight', 'bias'}
    plain = str(tmp_path / 'plain.pth')
    torch.save({'state_dict': {'a': torch.ones(1)}}, plain)
    assert set(conv.load_openai(plain)) == {'a'}
    with pytest.raises(ValueError, match='ViT'):
        conv.convert_clip({'visual.class_embedding': torch.zeros(4)})
    with pytest.raises(KeyError, match='no CLIP conversion rule'):
        conv.convert_clip({
            'visual.attnpool.positional_embedding': torch.zeros(2, 2),
            'mystery.weight': torch.zeros(1)
        })


def test_converter_checks_against_config(tmp_path):
    # the demo's CLIP ResNet with a tiny CLIP text tower
    cfg_path = str(tmp_path / 'tiny_clip.py')
    with open(cfg_path, 'w') as f:
        f.write(f"_base_ = ['{CRIS_DEMO_CFG}']\n"
                'model = dict(text_cache_size=0, text_encoder=dict(_delete_=True, '
                f"type='RefCLIPTextEncoder', config={CRIS_TINY_TEXT!r}, "
                'context_length=17), fusion=dict(text_channels=48), '
                'decode_head=dict(sent_channels=48, text_channels=32))\n')
    conv = converter()
    model = MODELS.build(Config.fromfile(cfg_path).model)
    converted = conv.convert_clip(conv.to_openai(model.state_dict()))
    conv.check_against_config(converted, cfg_path)  # no error
    converted['backbone.conv1.weight'] = torch.zeros(1)
    with pytest.raises(ValueError, match='shape mismatch'):
        conv.check_against_config(converted, cfg_path)
    converted.pop('backbone.conv1.weight')
    with pytest.raises(KeyError, match='missing'):
        conv.check_against_config(converted, cfg_path)


def openai_vit_forward(sd: dict, img: Tensor, heads: int) -> Tensor:
    """OpenAI CLIP ``VisionTransformer.forward`` (clip/model.py) on the
    OpenAI-layout ``sd``, keeping all patch tokens (not just CLS) through
    ln_post and proj, as ETRIS does. (B, 3, H, W) -> (B, D, h, w); H, W must
    match the positional table (no resizing here)."""
    p = sd['visual.conv1.weight'].shape[-1]
    x = F.conv2d(img, sd['visual.conv1.weight'], stride=p)  # (B, C, h, w)
    b, c, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)  # (B, hw, C)
    cls = sd['visual.class_embedding'].expand(b, 1, c)  # (B, 1, C)
    x = torch.cat([cls, x], 1) + sd['visual.positional_embedding']
    x = F.layer_norm(x, (c, ), sd['visual.ln_pre.weight'],
                     sd['visual.ln_pre.bias'])  # (B, 1 + hw, C)
    n = 0
    while f'visual.transformer.resblocks.{n}.ln_1.weight' in sd:
        n += 1
    for i in range(n):
        r = f'visual.transformer.resblocks.{i}.'
        y = F.layer_norm(x, (c, ), sd[r + 'ln_1.weight'], sd[r + 'ln_1.bias'])
        y = y.transpose(0, 1)  # (L, B, C)
        y, _ = F.multi_head_attention_forward(
            y, y, y, c, heads, sd[r + 'attn.in_proj_weight'],
            sd[r + 'attn.in_proj_bias'], None, None, False, 0.0,
            sd[r + 'attn.out_proj.weight'], sd[r + 'attn.out_proj.bias'],
            need_weights=False)  # (L, B, C)
        x = x + y.transpose(0, 1)
        y = F.layer_norm(x, (c, ), sd[r + 'ln_2.weight'], sd[r + 'ln_2.bias'])
        y = F.linear(y, sd[r + 'mlp.c_fc.weight'], sd[r + 'mlp.c_fc.bias'])
        y = y * torch.sigmoid(1.702 * y)  # QuickGELU
        x = x + F.linear(y, sd[r + 'mlp.c_proj.weight'],
                         sd[r + 'mlp.c_proj.bias'])
    x = F.layer_norm(x[:, 1:], (c, ), sd['visual.ln_post.weight'],
                     sd['visual.ln_post.bias']) @ sd['visual.proj']
    return x.transpose(1, 2).reshape(b, -1, h, w)  # (B, D, h, w)


def test_vit_round_trip_through_openai_layout():
    conv = converter()
    torch.manual_seed(0)
    model = tiny_vit().eval()
    for p in model.parameters():  # non-trivial LayerNorms and biases
        nn.init.normal_(p, std=0.2)
    state = {'backbone.' + k: v for k, v in model.state_dict().items()}
    openai = conv.to_openai(state)
    r = 'visual.transformer.resblocks.{i}.'
    expected = {
        'visual.conv1.weight': (64, 3, 16, 16),
        'visual.class_embedding': (64, ),
        'visual.positional_embedding': (197, 64),
        'visual.ln_pre.weight': (64, ), 'visual.ln_pre.bias': (64, ),
        'visual.ln_post.weight': (64, ), 'visual.ln_post.bias': (64, ),
        'visual.proj': (64, 32),  # x @ proj
    }
    for i in range(2):
        expected.update({(r + k).format(i=i): s for k, s in {
            'attn.in_proj_weight': (192, 64), 'attn.in_proj_bias': (192, ),
            'attn.out_proj.weight': (64, 64), 'attn.out_proj.bias': (64, ),
            'ln_1.weight': (64, ), 'ln_1.bias': (64, ),
            'ln_2.weight': (64, ), 'ln_2.bias': (64, ),
            'mlp.c_fc.weight': (256, 64), 'mlp.c_fc.bias': (256, ),
            'mlp.c_proj.weight': (64, 256), 'mlp.c_proj.bias': (64, ),
        }.items()})
    assert {k: tuple(v.shape) for k, v in openai.items()} == expected
    # OpenAI's forward on the OpenAI-layout weights = ours.
    img = torch.randn(2, 3, 224, 224)  # the table's own grid, no resizing
    with torch.no_grad():
        torch.testing.assert_close(openai_vit_forward(openai, img, heads=4),
                                   model(img)[-1])
    # OpenAI ships fp16 plus a few non-tensor entries.
    openai = {k: v.half() for k, v in openai.items()}
    openai.update(logit_scale=torch.tensor(4.6), input_resolution=224)
    converted = conv.convert_clip(openai)
    assert set(converted) == set(state)
    assert all(v.dtype == torch.float32 for v in converted.values())
    fresh = tiny_vit().eval()
    for p in fresh.parameters():
        nn.init.normal_(p)
    load_state_dict_strict(
        fresh, {k[len('backbone.'):]: v for k, v in converted.items()},
        'round trip')
    model.load_state_dict({k: v.half().float()
                           for k, v in model.state_dict().items()})
    img = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        for a, b in zip(fresh(img), model(img)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_converter_vit_errors():
    conv = converter()
    openai = conv.to_openai(
        {'backbone.' + k: v for k, v in tiny_vit().state_dict().items()})
    incomplete = {k: v for k, v in openai.items() if k != 'visual.proj'}
    with pytest.raises(ValueError, match=r"incomplete ViT.*visual\.proj"):
        conv.convert_clip(incomplete)
    # a ResNet key in a ViT checkpoint has no ViT rule
    with pytest.raises(KeyError, match='no CLIP conversion rule'):
        conv.convert_clip({**openai, 'visual.layer1.0.conv1.weight':
                           torch.zeros(1)})
    with pytest.raises(KeyError, match='no CLIP conversion rule'):
        conv.map_key('backbone.layers.0.gamma1', reverse=True, vit=True)


def test_converter_checks_vit_against_config(tmp_path):
    # The CRIS demo model with a tiny CLIPViT at img_size=160 (101 rows)
    # and a tiny CLIP text tower; the checkpoint comes from 224 (197 rows).
    cfg_path = str(tmp_path / 'tiny_clip_vit.py')
    with open(cfg_path, 'w') as f:
        f.write(f"_base_ = ['{CRIS_DEMO_CFG}']\n"
                'model = dict(backbone=dict(_delete_=True, type="CLIPViT", '
                f'arch={TINY_CLIP_VIT_ARCH!r}, img_size=160, '
                'out_indices=(0, 1), '
                'output_dim=32), text_cache_size=0, '
                'text_encoder=dict(_delete_=True, '
                f"type='RefCLIPTextEncoder', config={CRIS_TINY_TEXT!r}, "
                'context_length=17), fusion=dict(text_channels=48), '
                'decode_head=dict(sent_channels=48, text_channels=32))\n')
    conv = converter()
    cfg = Config.fromfile(cfg_path)
    target = MODELS.build(cfg.model)
    source = MODELS.build(cfg.model.copy())
    source.backbone = tiny_vit()  # img_size 224
    converted = conv.convert_clip(conv.to_openai(source.state_dict()))
    assert converted['backbone.pos_embed'].shape == (1, 197, 64)
    conv.check_against_config(converted, cfg_path)  # rows may differ
    rest = {k: v for k, v in target.state_dict().items()
            if k not in converted}
    load_state_dict_strict(target, {**rest, **converted}, 'resized')
    assert target.backbone.pos_embed.shape == (1, 101, 64)
    converted['backbone.pos_embed'] = torch.zeros(1, 197, 48)  # wrong C
    with pytest.raises(ValueError, match='shape mismatch'):
        conv.check_against_config(converted, cfg_path)
