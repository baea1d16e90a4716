"""CLIPResNet and its DenseAttentionPool2d (CRIS's dense CLIP ResNet)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ris_plugins.models import CLIPResNet, DenseAttentionPool2d

from ...conftest import CRIS_TINY_RN, randomize_bn


def test_clip_resnet_levels():
    bb = CLIPResNet(**CRIS_TINY_RN)
    bb.init_weights()
    c3, c4, c5 = bb(torch.randn(2, 3, 64, 96))
    assert c3.shape == (2, 64, 8, 12)  # 8w at stride 8
    assert c4.shape == (2, 128, 4, 6)  # 16w at stride 16
    assert c5.shape == (2, 48, 2, 3)  # output_dim at stride 32
    assert bb.out_channels == (64, 128, 48)
    assert bool((c5 >= 0).all())  # ReLU after the connect residual
    assert [len(getattr(bb, f'layer{i}')) for i in (1, 2, 3, 4)] == [1, 2,
                                                                      1, 1]
    with pytest.raises(ValueError, match='valid'):
        CLIPResNet(depth=34)
    with pytest.raises(ValueError, match='4 positive'):
        CLIPResNet(stage_blocks=(1, 1, 1), output_dim=8)


def _pool(embed=16, heads=2, out=16, spacial=2):
    torch.manual_seed(0)
    pool = DenseAttentionPool2d(spacial, embed, heads, out).eval()
    randomize_bn(pool)
    return pool


def test_dense_attnpool_pos_embed_is_resized():
    pool = _pool(spacial=3)
    grid = pool.positional_embedding.data[1:]  # (9, C), row 0 unused
    torch.testing.assert_close(pool.resized_pos_embed(3, 3), grid)
    # Bicubic resizing keeps a constant grid constant, at any size.
    pool.positional_embedding.data[1:] = torch.arange(16.)
    pool.positional_embedding.data[0] = 1e3  # the pooled-token row
    resized = pool.resized_pos_embed(5, 7)
    assert resized.shape == (35, 16)
    torch.testing.assert_close(resized, torch.arange(16.).expand(35, 16))
    # The forward uses it: other positional values change the output.
    x = torch.randn(2, 16, 5, 7)
    before = pool(x)
    pool.positional_embedding.data[1:] = torch.randn(9, 16)
    assert before.shape == (2, 16, 5, 7)
    assert not torch.allclose(before, pool(x))


def test_dense_attnpool_matches_torch_mha_plus_connect():
    """Dense MHSA over all H*W tokens (no pooled token) with CLIP's
    separate q/k/v/c projections, + connect, then ReLU."""
    pool = _pool(embed=16, heads=2, out=16, spacial=2)
    x = torch.randn(2, 16, 3, 4)
    mha = nn.MultiheadAttention(16, 2).eval()
    mha.in_proj_weight.data = torch.cat(
        [pool.q_proj.weight, pool.k_proj.weight, pool.v_proj.weight])
    mha.in_proj_bias.data = torch.cat(
        [pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias])
    mha.out_proj.load_state_dict(pool.c_proj.state_dict())
    seq = x.flatten(2).permute(2, 0, 1) + pool.resized_pos_embed(3, 4)[:,
                                                                      None]
    attn = mha(seq, seq, seq)[0].permute(1, 2, 0).reshape(2, 16, 3, 4)
    expected = F.relu(attn + pool.connect(x))
    with torch.no_grad():
        torch.testing.assert_close(pool(x), expected)


def test_dense_attnpool_relu_after_residual():
    pool = _pool(embed=8, heads=2, out=4)
    with torch.no_grad():
        pool.c_proj.weight.zero_()
        pool.c_proj.bias.fill_(-1.0)  # attention branch = -1
        pool.connect[0].weight.zero_()
        pool.connect[1].bias.fill_(0.5)  # connect branch = +0.5
        pool.connect[1].running_mean.zero_()
        out = pool(torch.randn(1, 8, 2, 2))
    # relu(-1 + 0.5) = 0; relu(-1) + 0.5 would give 0.5.
    assert torch.equal(out, torch.zeros_like(out))
