"""CLIPViT (mmpretrain VisionTransformer with CLIP settings) and the ViT
path of tools/model_converters/clip_to_ris.py."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from torch import Tensor

from mmseg.registry import MODELS
from ris_plugins.models import CLIPViT
from ris_plugins.utils.state_dict import load_state_dict_strict

from ..conftest import ROOT, load_tool

CRIS_DEMO_CFG = osp.join(
    ROOT, 'configs', 'demo',
    'cris-small_tiny-rn-minilm_1xb16-2k_refshapes-160x160.py')
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, projection_dim=48)
# width 64, 2 layers, 4 heads, MLP 256, patch 16, projection to 32
TINY_ARCH = dict(embed_dims=64, num_layers=2, num_heads=4,
                 feedforward_channels=256)


def tiny_vit(**kw) -> CLIPViT:
    cfg = dict(type='CLIPViT', arch=TINY_ARCH, out_indices=(0, 1),
               output_dim=32)
    cfg.update(kw)
    return MODELS.build(cfg)  # built from the mmseg scope, as in configs


def load_converter():
    return load_tool('model_converters/clip_to_ris.py')


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


# --------------------------------------------------------------- backbone
def test_clip_settings_and_shapes_at_non_224_input():
    model = tiny_vit().eval()
    assert model.patch_embed.projection.bias is None  # CLIP conv1: no bias
    assert isinstance(model.pre_norm, nn.LayerNorm)  # ln_pre
    assert model.ln1.eps == 1e-5 and model.layers[0].ln1.eps == 1e-5
    assert type(model.layers[0].ffn.layers[0][1]).__name__ == 'QuickGELU'
    assert model.pos_embed.shape == (1, 14 * 14 + 1, 64)  # img_size 224
    assert model.out_channels == (64, 32)
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 160, 160))  # 10 x 10 grid
    assert [tuple(o.shape) for o in outs] == [(2, 64, 10, 10),
                                              (2, 32, 10, 10)]
    # the last map is ln_post(tokens) @ proj: same weights, no projection
    plain = tiny_vit(output_dim=None).eval()
    state = {k: v for k, v in model.state_dict().items() if k != 'proj'}
    plain.load_state_dict(state)
    img = torch.randn(1, 3, 48, 64)  # 3 x 4 grid, not square
    with torch.no_grad():
        raw = plain(img)
        projected = model(img)
    assert raw[-1].shape == (1, 64, 3, 4)
    torch.testing.assert_close(
        projected[-1], torch.einsum('bchw,cd->bdhw', raw[-1], model.proj))
    torch.testing.assert_close(projected[0], raw[0])


def test_pos_embed_resized_at_load_like_at_forward():
    # ETRIS resizes the 224 table once at load for its 416 input; here a
    # 224 checkpoint (14^2 + 1 rows) loads into img_size=160 (10^2 + 1).
    src = tiny_vit().eval()
    dst = tiny_vit(img_size=160).eval()
    assert dst.pos_embed.shape == (1, 101, 64)
    dst.load_state_dict(src.state_dict())
    img = torch.randn(1, 3, 160, 160)
    with torch.no_grad():
        for a, b in zip(src(img), dst(img)):  # both resize 14^2 -> 10^2
            torch.testing.assert_close(a, b)


def test_invalid_arguments():
    with pytest.raises(ValueError, match='out_indices'):
        tiny_vit(out_indices=(0, ))  # the projected last block not tapped
    with pytest.raises(ValueError, match="'featmap'"):
        tiny_vit(out_type='cls_token')
    assert tiny_vit(out_indices=(0, ), output_dim=None).out_channels == (64, )


def test_vit_b16_matches_openai_visual_tower():
    model = CLIPViT()  # defaults: ViT-B/16, 224, proj 768 -> 512
    # OpenAI ViT-B/16 visual tower, by hand (C = 768, 12 layers, p = 16):
    #   conv1 (no bias)   3 * 16 * 16 * 768          =    589,824
    #   class_embedding   768                        =        768
    #   positional        (224 / 16)^2 + 1 = 197 * 768 =  151,296
    #   ln_pre            2 * 768                    =      1,536
    #   per block: in_proj 3C*C + 3C = 1,771,776; out_proj C*C + C =
    #     590,592; ln_1 + ln_2 = 3,072; c_fc C*4C + 4C = 2,362,368;
    #     c_proj 4C*C + C = 2,360,064; block = 7,087,872; x 12 = 85,054,464
    #   ln_post           2 * 768                    =      1,536
    #   proj              768 * 512                  =    393,216
    #   total 589,824 + 768 + 151,296 + 1,536 + 85,054,464 + 1,536
    #         + 393,216                              = 86,192,640
    assert sum(p.numel() for p in model.parameters()) == 86_192_640
    openai = load_converter().to_openai(
        {'backbone.' + k: v for k, v in model.state_dict().items()})
    assert openai['visual.positional_embedding'].shape == (197, 768)
    assert openai['visual.class_embedding'].shape == (768, )
    assert openai['visual.proj'].shape == (768, 512)
    assert openai['visual.conv1.weight'].shape == (768, 3, 16, 16)
    assert openai['visual.transformer.resblocks.11.attn.in_proj_weight'] \
        .shape == (2304, 768)
    assert openai['visual.transformer.resblocks.11.mlp.c_fc.weight'] \
        .shape == (3072, 768)
    # OpenAI's visual.* keys: conv1, class / positional embedding, ln_pre
    # (2); 12 per block; ln_post (2), proj.
    assert len(openai) == 5 + 12 * 12 + 3


# -------------------------------------------------------------- converter
def test_converter_round_trip_through_openai_layout():
    conv = load_converter()
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
    conv = load_converter()
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
                f'arch={TINY_ARCH!r}, img_size=160, out_indices=(0, 1), '
                'output_dim=32), text_encoder=dict(_delete_=True, '
                f"type='RefCLIPTextEncoder', config={TINY_TEXT!r}, "
                'context_length=17), fusion=dict(text_channels=48), '
                'decode_head=dict(sent_channels=48, text_channels=32))\n')
    conv = load_converter()
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
