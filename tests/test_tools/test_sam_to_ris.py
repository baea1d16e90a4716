"""tools/model_converters/sam_to_ris.py: official SAM ``image_encoder.*``
<-> SAMViT ``backbone.*`` (+ CLIP text tower), checked against a
functional SAM image encoder written from segment-anything's
``modeling/image_encoder.py``."""
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import Tensor

from mmseg.registry import MODELS

from ..conftest import ROOT, load_tool

DEMO_CFG = osp.join(ROOT, 'configs', 'demo',
                    'haris-small_tiny-sam-clip_1xb16-2k_refshapes-160x160.py')
# depth 3, width 16, 2 heads, patch 8, grid 5 x 5 (input 40), windows of
# 3 (padded to 6), global attention in block 1, neck 8.
DEPTH, C, HEADS, PATCH, GRID, WIN, GLOBAL, NECK = 3, 16, 2, 8, 5, 3, (1, ), 8


def converter():
    return load_tool('model_converters/sam_to_ris.py')


def fake_sam_state(seed=0, depth=DEPTH, c=C, heads=HEADS, patch=PATCH,
                   grid=GRID, win=WIN, glob=GLOBAL, neck=NECK) -> dict:
    """Random tensors under the official ``Sam`` key names and shapes
    (image_encoder.py: PatchEmbed.proj, Block.norm1/attn/norm2/mlp, neck),
    plus prompt-encoder / mask-decoder keys that must be dropped."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    e = 'image_encoder.'
    sd = {e + 'pos_embed': r(1, grid, grid, c),
          e + 'patch_embed.proj.weight': r(c, 3, patch, patch, scale=0.05),
          e + 'patch_embed.proj.bias': r(c)}
    hd = c // heads
    for i in range(depth):
        b = f'{e}blocks.{i}.'
        size = grid if i in glob else win
        sd.update({
            b + 'norm1.weight': 1 + r(c), b + 'norm1.bias': r(c),
            b + 'attn.qkv.weight': r(3 * c, c), b + 'attn.qkv.bias': r(3 * c),
            b + 'attn.proj.weight': r(c, c), b + 'attn.proj.bias': r(c),
            b + 'attn.rel_pos_h': r(2 * size - 1, hd),
            b + 'attn.rel_pos_w': r(2 * size - 1, hd),
            b + 'norm2.weight': 1 + r(c), b + 'norm2.bias': r(c),
            b + 'mlp.lin1.weight': r(4 * c, c), b + 'mlp.lin1.bias': r(4 * c),
            b + 'mlp.lin2.weight': r(c, 4 * c), b + 'mlp.lin2.bias': r(c)})
    sd.update({e + 'neck.0.weight': r(neck, c, 1, 1),
               e + 'neck.1.weight': 1 + r(neck), e + 'neck.1.bias': r(neck),
               e + 'neck.2.weight': r(neck, neck, 3, 3),
               e + 'neck.3.weight': 1 + r(neck), e + 'neck.3.bias': r(neck),
               'prompt_encoder.pe_layer.positional_encoding_gaussian_matrix':
               r(2, 4),
               'mask_decoder.iou_token.weight': r(1, 4)})
    return sd


def _attention(x: Tensor, sd: dict, b: str, heads: int) -> Tensor:
    """SAM Attention with decomposed relative positions; x (B', h, w, C),
    the tables sized for (h, w) (no interpolation needed here)."""
    n, h, w, c = x.shape
    hd = c // heads
    qkv = F.linear(x, sd[b + 'qkv.weight'], sd[b + 'qkv.bias'])
    q, k, v = qkv.reshape(n, h * w, 3, heads, hd).permute(2, 0, 3, 1, 4)
    a = (q * hd**-0.5) @ k.transpose(-2, -1)  # (B', heads, hw, hw)
    idx_h = torch.arange(h)[:, None] - torch.arange(h)[None] + h - 1
    idx_w = torch.arange(w)[:, None] - torch.arange(w)[None] + w - 1
    rh = sd[b + 'rel_pos_h'][idx_h]  # (h, h, hd)
    rw = sd[b + 'rel_pos_w'][idx_w]  # (w, w, hd)
    qg = q.reshape(n, heads, h, w, hd)
    rel_h = torch.einsum('bnywc,ykc->bnywk', qg, rh)  # (.., h, w, h)
    rel_w = torch.einsum('bnywc,wkc->bnywk', qg, rw)  # (.., h, w, w)
    a = a.view(n, heads, h, w, h, w) + rel_h[..., :, None] + \
        rel_w[..., None, :]
    out = a.view(n, heads, h * w, h * w).softmax(-1) @ v  # (B', heads, hw, hd)
    out = out.permute(0, 2, 1, 3).reshape(n, h, w, c)
    return F.linear(out, sd[b + 'proj.weight'], sd[b + 'proj.bias'])


def _ln2d(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """LayerNorm2d over channels of (B, C, H, W), eps 1e-6."""
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + 1e-6)
    return weight[:, None, None] * x + bias[:, None, None]


def sam_image_encoder(sd: dict, img: Tensor, depth=DEPTH, heads=HEADS,
                      win=WIN, glob=GLOBAL) -> list:
    """``ImageEncoderViT.forward`` on the official-layout ``sd``: returns
    the (B, C, h, w) map after every block and the neck output last."""
    e = 'image_encoder.'
    w = sd[e + 'patch_embed.proj.weight']
    x = F.conv2d(img, w, sd[e + 'patch_embed.proj.bias'],
                 stride=w.shape[-1]).permute(0, 2, 3, 1)  # (B, h, w, C)
    x = x + sd[e + 'pos_embed']
    b_, gh, gw, c = x.shape
    outs = []
    for i in range(depth):
        b = f'{e}blocks.{i}.'
        y = F.layer_norm(x, (c, ), sd[b + 'norm1.weight'],
                         sd[b + 'norm1.bias'], eps=1e-6)
        if i in glob:
            y = _attention(y, sd, b + 'attn.', heads)
        else:
            ph, pw = -gh % win, -gw % win
            y = F.pad(y, (0, 0, 0, pw, 0, ph))
            hp, wp = gh + ph, gw + pw
            y = y.view(b_, hp // win, win, wp // win, win, c)
            y = y.permute(0, 1, 3, 2, 4, 5).reshape(-1, win, win, c)
            y = _attention(y, sd, b + 'attn.', heads)
            y = y.view(b_, hp // win, wp // win, win, win, c)
            y = y.permute(0, 1, 3, 2, 4, 5).reshape(b_, hp, wp, c)
            y = y[:, :gh, :gw]
        x = x + y
        y = F.layer_norm(x, (c, ), sd[b + 'norm2.weight'],
                         sd[b + 'norm2.bias'], eps=1e-6)
        y = F.gelu(F.linear(y, sd[b + 'mlp.lin1.weight'],
                            sd[b + 'mlp.lin1.bias']))
        x = x + F.linear(y, sd[b + 'mlp.lin2.weight'],
                         sd[b + 'mlp.lin2.bias'])
        outs.append(x.permute(0, 3, 1, 2))
    y = F.conv2d(outs[-1], sd[e + 'neck.0.weight'])
    y = _ln2d(y, sd[e + 'neck.1.weight'], sd[e + 'neck.1.bias'])
    y = F.conv2d(y, sd[e + 'neck.2.weight'], padding=1)
    outs.append(_ln2d(y, sd[e + 'neck.3.weight'], sd[e + 'neck.3.bias']))
    return outs


def sam_vit(img_size=GRID * PATCH, **kw):
    cfg = dict(type='SAMViT',
               arch=dict(embed_dims=C, num_layers=DEPTH, num_heads=HEADS,
                         feedforward_channels=4 * C,
                         global_attn_indexes=list(GLOBAL)),
               img_size=img_size, patch_size=PATCH, window_size=WIN,
               out_channels=NECK, out_indices=(0, 1, 2), neck_as_deep=True)
    cfg.update(kw)
    return MODELS.build(cfg)


def test_converted_sam_matches_official_forward():
    conv = converter()
    sd = fake_sam_state()
    ours = conv.convert_sam(sd)
    assert not any(k.startswith(('prompt', 'mask')) for k in ours)
    assert set(ours) == {conv.map_key(k)
                         for k in sd if k.startswith('image_encoder.')}
    model = sam_vit()
    model.load_state_dict({k[len('backbone.'):]: v for k, v in ours.items()})
    img = torch.randn(2, 3, GRID * PATCH, GRID * PATCH)
    ref = sam_image_encoder(sd, img)
    outs = model(img)
    torch.testing.assert_close(outs[0], ref[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[1], ref[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[2], ref[3], rtol=1e-4, atol=1e-5)


def test_round_trip_and_official_names():
    conv = converter()
    sd = fake_sam_state()
    back = conv.to_sam(conv.convert_sam(sd))
    enc = {k: v for k, v in sd.items() if k.startswith('image_encoder.')}
    assert list(back) == list(enc)
    for k in enc:
        assert torch.equal(back[k], enc[k]), k
    # Our names for one block, spelled out.
    assert conv.map_key('image_encoder.blocks.2.mlp.lin1.weight') == \
        'backbone.layers.2.ffn.layers.0.0.weight'
    assert conv.map_key('image_encoder.neck.3.bias') == \
        'backbone.channel_reduction.3.bias'
    assert conv.map_key('backbone.layers.0.ln1.weight', reverse=True) == \
        'image_encoder.blocks.0.norm1.weight'
    # Every key of a SAMViT has a rule.
    names = set(sam_vit().state_dict())
    assert {k[len('backbone.'):] for k in conv.convert_sam(sd)} == names


def test_tables_resized_when_loaded_at_another_size():
    conv = converter()
    ours = conv.convert_sam(fake_sam_state())
    model = sam_vit(img_size=3 * PATCH)  # grid 3 instead of 5
    model.load_state_dict({k[len('backbone.'):]: v for k, v in ours.items()})
    assert model.pos_embed.shape == (1, 3, 3, C)
    assert model.layers[1].attn.rel_pos_h.shape == (5, C // HEADS)  # 2*3-1
    assert model.layers[0].attn.rel_pos_h.shape == (5, C // HEADS)  # window


def test_errors():
    conv = converter()
    with pytest.raises(KeyError, match='not a SAM checkpoint'):
        conv.convert_sam({'visual.conv1.weight': torch.zeros(1)})
    with pytest.raises(KeyError, match='no SAM conversion rule'):
        conv.map_key('image_encoder.blocks.0.extra.weight')


def test_cli_with_clip_text_checked_against_config(tmp_path):
    """The demo HARIS config: SAM + CLIP text into one load_from file."""
    conv = converter()
    cfg = Config.fromfile(DEMO_CFG)
    model = MODELS.build(cfg.model)
    arch = cfg.model.backbone.arch
    sam = fake_sam_state(depth=arch.num_layers, c=arch.embed_dims,
                         heads=arch.num_heads, patch=16, grid=10, win=5,
                         glob=tuple(arch.global_attn_indexes), neck=64)
    sam_path, clip_path = str(tmp_path / 'sam.pth'), str(tmp_path / 'c.pt')
    torch.save(sam, sam_path)
    clip = load_tool('model_converters/clip_to_ris.py')
    text = {k: v for k, v in model.state_dict().items()
            if k.startswith('text_encoder.')}
    openai_text = clip.to_openai(text)
    openai_text['visual.conv1.weight'] = torch.zeros(1)  # dropped
    torch.save(openai_text, clip_path)
    out = conv.convert(sam_path, clip_path, config=DEMO_CFG)
    assert set(out) == {k for k in model.state_dict()
                        if k.startswith(('backbone.', 'text_encoder.'))}
    for k, v in text.items():
        assert torch.equal(out[k], v), k
    assert torch.equal(out['backbone.layers.3.ffn.layers.1.weight'],
                       sam['image_encoder.blocks.3.mlp.lin2.weight'])
    wrong = fake_sam_state()  # depth 3 vs the config's 6
    torch.save(wrong, sam_path)
    with pytest.raises(KeyError, match='missing'):
        conv.convert(sam_path, config=DEMO_CFG)
