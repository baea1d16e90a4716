"""CLIPViT (mmpretrain VisionTransformer with CLIP settings)."""
import pytest
import torch
import torch.nn as nn

from ris_plugins.models import CLIPViT

from ...conftest import load_tool, tiny_vit


def converter():
    return load_tool('model_converters/clip_to_ris.py')


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


@pytest.mark.slow
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
    openai = converter().to_openai(
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
