"""BridgerRN (ETRIS's adapter between CLIP ResNet stages)."""
import pytest
import torch

from mmseg.registry import MODELS
from ris_plugins.models.adapters.bridger_rn import BridgerRN

from ...conftest import assert_gradient_matches_finite_difference


def test_bridger_rn_full_size_params():
    br = MODELS.build(dict(type='BridgerRN'))  # RN50 / RN101 widths
    assert sum(p.numel() for p in br.parameters()) == 1_942_080
    per_stage = [sum(p.numel() for p in s.parameters()) for s in br.stages]
    ladder = 2 * 2 * 64  # one LayerNorm pair (v, t) at width 64
    # ris_methods.md 3.3 counts the ladder norms with stages 0 and 1.
    assert [per_stage[0] + ladder, per_stage[1] + ladder,
            per_stage[2]] == [428_992, 297_920, 1_215_168]
    # Interactor by hand: 2 MHA (4 d^2 + 4 d) + FFN 64-128-64 + 3 LN.
    d = 64
    inter = 2 * (4 * d * d + 4 * d) + (d * 128 + 128) + (128 * d + d) + 6 * d
    assert sum(p.numel() for p in br.stages[0].fusion_v.parameters()) == inter


def tiny_bridger(**kw):
    torch.manual_seed(0)
    return BridgerRN(
        visual_dim=(8, 16, 32),
        text_dim=12,
        d_model=8,
        num_heads=2,
        ffn_dim=16,
        **kw).eval()


def tiny_inputs():
    g = torch.Generator().manual_seed(3)
    vis = [
        torch.randn(2, 8, 8, 8, generator=g),
        torch.randn(2, 16, 4, 4, generator=g),
        torch.randn(2, 32, 2, 2, generator=g)
    ]
    txt = torch.randn(2, 5, 12, generator=g)
    pad = torch.tensor([[False] * 3 + [True] * 2, [False] * 4 + [True]])
    return vis, txt, pad


def run_stages(br, vis, txt, pad):
    outs, state = [], None
    for s in range(3):
        v, txt, state = br(s, vis[s], txt, pad, state)
        outs.append(v)
    return outs, txt, state


def test_bridger_rn_shapes_and_ladder():
    br = tiny_bridger()
    vis, txt, pad = tiny_inputs()
    v0, t0, st0 = br(0, vis[0], txt, pad)
    assert v0.shape == vis[0].shape and t0.shape == txt.shape
    assert st0[0].shape == (2, 16, 8) and st0[1].shape == (2, 5, 8)
    v1, t1, st1 = br(1, vis[1], t0, pad, st0)
    # Ladder: the state is LN(zoom_in(v) + previous state).
    z = br.stages[1].zoom_in(vis[1]).flatten(2).transpose(1, 2)
    torch.testing.assert_close(st1[0], br.ladder_v[0](z + st0[0]))
    zt = br.stages[1].txt_in(t0)
    torch.testing.assert_close(st1[1], br.ladder_t[0](zt + st0[1]))
    v2, t2, _ = br(2, vis[2], t1, pad, st1)
    assert v2.shape == (2, 32, 2, 2)


def test_bridger_rn_residual_is_zero_when_zoom_out_is_zero():
    br = tiny_bridger()
    with torch.no_grad():
        for s in br.stages:
            s.zoom_out.weight.zero_()
            s.txt_out.weight.zero_()
            s.txt_out.bias.zero_()
    vis, txt, pad = tiny_inputs()
    outs, t, _ = run_stages(br, vis, txt, pad)
    for o, v in zip(outs, vis):
        torch.testing.assert_close(o, v)
    torch.testing.assert_close(t, txt)


def test_bridger_rn_padding_mask():
    vis, txt, pad = tiny_inputs()
    txt2 = txt.clone()
    txt2[pad] = torch.randn(int(pad.sum()), 12)
    for mask_padding, same in ((True, True), (False, False)):
        br = tiny_bridger(mask_padding=mask_padding)
        with torch.no_grad():
            a, _, _ = run_stages(br, vis, txt, pad)
            b, _, _ = run_stages(br, vis, txt2, pad)
        assert torch.allclose(a[2], b[2], atol=1e-6) == same


def test_bridger_rn_grads_reach_all_params():
    br = tiny_bridger().train()
    vis, txt, pad = tiny_inputs()
    outs, t, _ = run_stages(br, vis, txt, pad)
    (sum(o.square().mean() for o in outs) + t.square().mean()).backward()
    assert all(p.grad is not None for p in br.parameters())
    # ... and it is the gradient of that loss (finite difference, float64).
    br.double()
    vis, txt = [v.double() for v in vis], txt.double()

    def loss():
        torch.manual_seed(0)
        outs, t, _ = run_stages(br, vis, txt, pad)
        return sum(o.square().mean() for o in outs) + t.square().mean()

    assert_gradient_matches_finite_difference(loss, br.parameters())


def test_bridger_rn_bad_input():
    br = tiny_bridger()
    vis, txt, pad = tiny_inputs()
    with pytest.raises(ValueError, match=r'stages \[0, 1, 2\], got 3'):
        br(3, vis[2], txt, pad)
    with pytest.raises(ValueError, match=r'expects vision \(B, 16'):
        br(1, vis[0], txt, pad, (None, None))
    with pytest.raises(ValueError, match=r'\(B, L, 12\)'):
        br(0, vis[0], torch.randn(2, 5, 7), pad)
    with pytest.raises(ValueError, match='needs the ladder state'):
        br(1, vis[1], txt, pad)
    with pytest.raises(ValueError, match='multiples of the stage stride'):
        br(0, torch.randn(2, 8, 7, 7), txt, pad)
    with pytest.raises(ValueError, match='one entry per stage'):
        BridgerRN(visual_dim=(8, 16), strides=(2, 1, 2))
    with pytest.raises(ValueError, match="'down' or 'up'"):
        BridgerRN(zoom_modes=('down', 'down', 'sideways'))
