"""HANeck (ETRIS's hierarchical alignment neck)."""
import pytest
import torch

from ris_plugins.models import CRISHead, HANeck, TextFeatures

from ...conftest import BCE, n_params


def test_ha_neck_and_etris_head_full_size_parameter_counts():
    neck = HANeck()  # ViT-B/16: 768 / 768 / 512 -> 512, strides 1
    head = CRISHead(in_channels=512, channels=256, sent_channels=512,
                    ffn_channels=512, loss_decode=BCE)
    assert n_params(neck) == 9_983_488
    assert n_params(neck) + n_params(head) == 22_671_361  # ris_methods 3.4


def test_ha_neck_gate_is_a_channel_gate():
    """One key: softmax = 1, so fq_i = f_i * (W_o (W_v s + b_v) + b_o)."""
    torch.manual_seed(0)
    neck = HANeck(in_channels=[8, 12, 6], channels=16, strides=[2, 1, 2],
                  text_channels=10, num_heads=2).eval()
    levels = [torch.randn(2, 8, 8, 8), torch.randn(2, 12, 4, 4),
              torch.randn(2, 6, 2, 2)]
    text = TextFeatures(torch.randn(2, 3, 10), torch.randn(2, 10),
                        torch.zeros(2, 3, dtype=torch.bool))
    (out, ), text_out = neck(levels, text)
    assert out.shape == (2, 16, 4, 4) and text_out is text
    # Rebuild with explicit channel gates.
    s = neck.text_proj(text.sent_feat)  # (B, C)
    fused = []
    for proj, gate, v in zip((neck.proj3, neck.proj4, neck.proj5),
                             neck.gates, levels):
        w_v = gate.in_proj_weight[32:]
        b_v = gate.in_proj_bias[32:]
        g = gate.out_proj(s @ w_v.T + b_v)  # (B, C)
        fused.append(proj(v) * g[:, :, None, None])
    x = neck.aggregate(torch.cat(fused, 1))
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h),
                            torch.linspace(-1, 1, w), indexing='ij')
    coords = torch.stack([xs, ys])[None].expand(b, 2, h, w)
    want = neck.out_conv(neck.coord_conv(torch.cat([x, coords], 1)))
    torch.testing.assert_close(out, want)
    with pytest.raises(ValueError, match='needs 3 visual levels'):
        neck(levels[:2], text)
    with pytest.raises(ValueError, match='level widths'):
        neck([levels[1], levels[1], levels[2]], text)
