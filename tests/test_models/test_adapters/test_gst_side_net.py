"""GSTSideNet (BarLeRIa's global shortcut tuning side network, ris_methods.md
4.3)."""
import pytest
import torch
import torch.nn as nn

from mmseg.registry import MODELS
from ris_plugins.models.adapters.gst_side_net import GSTSideNet

from ...conftest import assert_gradient_matches_finite_difference

SMALL = dict(
    visual_dim=16,
    text_dim=12,
    width=24,
    depth=3,
    num_heads=2,
    num_queries=4,
    fusion_map=((1, 0), (2, 1), (3, 2)),
    grid=4,
    out_dim=10,
    patch_size=8)


def small_net(**kw) -> GSTSideNet:
    torch.manual_seed(0)
    return GSTSideNet(**{**SMALL, **kw}).eval()


def strong_feedback(net: GSTSideNet) -> GSTSideNet:
    """Identity decoders (td_d = the prior) and unit-gain block weights so
    that the prior visibly moves the output (with the std-0.02 timm init
    its effect is ~1e-4)."""
    torch.manual_seed(2)
    with torch.no_grad():
        for m in net.blocks.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, m.in_features**-0.5)
        for dec in net.decoders:
            dec.linear.weight.copy_(torch.eye(net.width))
            dec.linear2.weight.copy_(torch.eye(net.width))
    return net


def inputs(b: int = 3, seed: int = 1, length: int = 5):
    g = torch.Generator().manual_seed(seed)
    img = torch.randn(b, 3, 32, 32, generator=g)
    feats = {i: torch.randn(b, 16, 16, generator=g) for i in (1, 2, 3)}
    txt = torch.randn(b, length, 12, generator=g)
    pad = torch.zeros(b, length, dtype=torch.bool)
    for i in range(b):
        pad[i, 2 + i % (length - 2):] = True  # different lengths
    return img, feats, txt, pad


def sample(batch, i):
    img, feats, txt, pad = batch
    return (img[i:i + 1], {
        k: v[i:i + 1]
        for k, v in feats.items()
    }, txt[i:i + 1], pad[i:i + 1])


def test_full_size_param_count_matches_docs():
    net = GSTSideNet()  # official sizes
    count = {}
    for name, p in net.named_parameters():
        key = name.split('.')[0]
        key = 'queries' if key.startswith('query') else key
        count[key] = count.get(key, 0) + p.numel()
    # ris_methods.md 4.3 table (out_proj = upstream side_linear).
    assert count == dict(
        patch_embed=110_736,
        pos_embed=97_344,
        blocks=2_005_632,
        decoders=331_776,
        queries=36_864,
        prompt_proj=21_168,
        fusions=449_088,
        out_proj=74_240)
    assert sum(count.values()) == 3_126_848
    # Hand count of one block at C=144: 2 LN + qkv + proj + fc1 + fc2.
    c = 144
    assert sum(
        p.numel()
        for p in net.blocks[0].parameters()) == (4 * c + (c * 3 * c + 3 * c) +
                                                 (c * c + c) +
                                                 (c * 4 * c + 4 * c) +
                                                 (4 * c * c + c))


def test_registered_and_shapes():
    net = MODELS.build(dict(type='GSTSideNet', **SMALL))
    assert net.clip_blocks == [1, 2, 3]
    img, feats, txt, pad = inputs()
    out, aux = net(img, feats, txt, pad)
    assert out.shape == (3, 10, 4, 4)
    assert aux.dim() == 0 and aux.item() > 0
    # (B, C, H, W) CLIP maps on another grid are resized; a 48-px image
    # gives a 6x6 side grid (pos_embed resized).
    maps = {k: torch.randn(3, 16, 3, 3) for k in (1, 2, 3)}
    out, _ = net(torch.randn(3, 3, 48, 48), maps, txt, pad)
    assert out.shape == (3, 10, 6, 6)


def test_fixed_prior_independent_of_batch():
    batch = inputs(b=3)
    for include_padding in (False, True):
        net = strong_feedback(small_net(include_padding=include_padding))
        with torch.no_grad():
            out_b, _ = net(*batch)
            # The prior matters: without feedback the output changes.
            no_fb = small_net(include_padding=include_padding)
            assert (no_fb(*batch)[0] - out_b).abs().max() > 1e-2
            for i in range(3):
                out_1, _ = net(*sample(batch, i))
                torch.testing.assert_close(
                    out_1[0], out_b[i], atol=1e-5, rtol=1e-5)


def test_batch_axis_prior_depends_on_batch():
    batch = inputs(b=3)
    net = strong_feedback(small_net(batch_axis_prior=True))
    with torch.no_grad():
        out_b, _ = net(*batch)
        out_1, _ = net(*sample(batch, 0))
    assert (out_1[0] - out_b[0]).abs().max() > 1e-2


def test_global_prior_hand_values():
    net = small_net(width=2, num_heads=1)
    x = torch.tensor([[[3., 4.], [-1., 0.]]])  # (1, 2, 2)
    p = torch.tensor([[1., 0.]])  # (1, 2), |p| = 1
    # cos = (0.6, -1) -> m = (0.6, 0); p p^T = diag(1, 0); scale 5.
    expected = torch.tensor([[[0.6 * 3 * 5, 0.], [0., 0.]]])
    torch.testing.assert_close(net.global_prior(x, p), expected)
    # Upstream: p divided by its norm over the batch axis; at batch 1
    # p = (2, -0.5) becomes (1, -1), so cos(x_0) = (3 - 4) / 5 < 0 -> 0
    # and cos(x_1) = -1 / 1 -> 0: everything is cut.
    p = torch.tensor([[2., -0.5]])
    bug = small_net(width=2, num_heads=1, batch_axis_prior=True)
    torch.testing.assert_close(bug.global_prior(x, p), torch.zeros(1, 2, 2))
    x2 = torch.tensor([[[4., 3.], [0., 0.]]])  # cos_bug = (4 - 3) / 5
    # x m = 0.2 * (4, 3); p p^T = [[4, -1], [-1, .25]]; * 5.
    expected = 0.2 * 5 * torch.tensor([[[4 * 4 - 3, -4 + 0.75], [0, 0]]])
    torch.testing.assert_close(bug.global_prior(x2, p), expected)


def test_prompt_mean_excludes_padding_by_default():
    net = small_net()
    prompt = torch.tensor([[[1., 2.], [3., 4.], [100., 100.]]])
    pad = torch.tensor([[False, False, True]])
    torch.testing.assert_close(
        net._prompt_mean(prompt, pad), torch.tensor([[2., 3.]]))
    official = small_net(include_padding=True)
    torch.testing.assert_close(
        official._prompt_mean(prompt, pad), torch.tensor([[104 / 3, 106 / 3]]))


def test_padding_content_ignored_unless_included():
    img, feats, txt, pad = inputs(b=2)
    txt2 = txt.clone()
    txt2[pad] = torch.randn(int(pad.sum()), 12)
    for include, same in ((False, True), (True, False)):
        net = strong_feedback(small_net(include_padding=include))
        with torch.no_grad():
            a, _ = net(img, feats, txt, pad)
            b, _ = net(img, feats, txt2, pad)
        assert torch.allclose(a, b, atol=1e-6) == same


def test_feedback_runs_last_to_first():
    net = small_net(depth=3, fusion_map=((1, 0), ))
    a, b = (2., 3., 5.), (7., 11., 13.)
    eye = torch.eye(SMALL['width'])
    with torch.no_grad():
        for d in range(3):
            net.decoders[d].linear.weight.copy_(a[d] * eye)
            net.decoders[d].linear2.weight.copy_(b[d] * eye)
    x = torch.randn(1, 6, SMALL['width'])
    td = net.feedback(x)
    # h_2 = 5x, h_1 = 3*5x, h_0 = 2*3*5x; td_d = b_d h_d.
    for d, gain in enumerate((7 * 30, 11 * 15, 13 * 5)):
        torch.testing.assert_close(td[d], gain * x)


def test_aux_loss_trains_only_decoder_first_linears():
    net = small_net().train()
    img, feats, txt, pad = inputs(b=2)
    txt.requires_grad_(True)
    _, aux = net(img, feats, txt, pad)
    aux.backward()
    for name, p in net.named_parameters():
        has = p.grad is not None and p.grad.abs().sum() > 0
        assert has == (name.startswith('decoders.')
                       and '.linear.' in name), name
    assert txt.grad is None


def test_output_grads_reach_every_parameter():
    net = small_net().train()
    out, aux = net(*inputs(b=2))
    (out.square().mean() + aux).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing
    # The output's gradient is the true one (finite difference, float64;
    # ``aux`` is left out: it stops gradients on purpose, see above).
    net.double()
    img, feats, txt, pad = inputs(b=2)
    args = (img.double(), {k: v.double() for k, v in feats.items()},
            txt.double(), pad)
    params = [p for n, p in net.named_parameters()
              if not (n.startswith('decoders.') and '.linear.' in n)]

    def loss():
        torch.manual_seed(0)
        return net(*args)[0].square().mean()

    assert_gradient_matches_finite_difference(loss, params)


def test_bad_input():
    with pytest.raises(ValueError, match='valid: 0..3'):
        GSTSideNet(**{**SMALL, 'fusion_map': ((1, 4), )})
    with pytest.raises(ValueError, match='1-based'):
        GSTSideNet(**{**SMALL, 'fusion_map': ((0, 0), )})
    with pytest.raises(ValueError, match='used twice'):
        GSTSideNet(**{**SMALL, 'fusion_map': ((1, 0), (2, 0))})
    net = small_net()
    img, feats, txt, pad = inputs(b=2)
    with pytest.raises(KeyError, match=r'CLIP block 3.*got keys \[1, 2\]'):
        net(img, {k: feats[k] for k in (1, 2)}, txt, pad)
    with pytest.raises(
            ValueError, match='width 20 but GSTSideNet '
            'visual_dim=16'):
        net(img, {**feats, 2: torch.randn(2, 16, 20)}, txt, pad)
    with pytest.raises(ValueError, match=r'\(B, L, 12\)'):
        net(img, feats, torch.randn(2, 5, 7), pad)
    with pytest.raises(ValueError, match='every token'):
        net(img, feats, txt, torch.ones_like(pad))
