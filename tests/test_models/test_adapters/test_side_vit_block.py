"""SideViTBlock and FeedbackDecoder of the GST side network."""
import torch
import torch.nn as nn

from ris_plugins.models.adapters.side_vit_block import (FeedbackDecoder,
                                                        SideViTBlock)


def test_side_block_matches_torch_mha():
    torch.manual_seed(0)
    blk = SideViTBlock(8, 2).eval()
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        blk.attn.qkv.bias.zero_()  # td adds b_v again; zero for the check
        mha.in_proj_weight.copy_(blk.attn.qkv.weight)
        mha.in_proj_bias.zero_()
        mha.out_proj.weight.copy_(blk.attn.proj.weight)
        mha.out_proj.bias.copy_(blk.attn.proj.bias)
    x, td = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    keys = torch.tensor([[False] * 4 + [True], [False] * 5])
    y = blk.norm1(x)
    ref = mha(y, y, y + td, key_padding_mask=keys)[0]
    torch.testing.assert_close(blk.attn(y, td, keys), ref)
    # Whole block: x + attn, then + MLP(LN2).
    h = x + ref
    mlp = blk.ffn.layers
    ref_block = h + mlp(blk.norm2(h))
    torch.testing.assert_close(blk(x, td, keys), ref_block)


def test_feedback_decoder_returns_hidden_and_td():
    dec = FeedbackDecoder(3)
    x = torch.randn(2, 3)
    h, td = dec(x)
    torch.testing.assert_close(h, x @ dec.linear.weight.T)
    torch.testing.assert_close(td, h @ dec.linear2.weight.T)
    assert dec.linear.bias is None and dec.linear2.bias is None
