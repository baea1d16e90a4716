"""HLABlock (HARIS's Human-Like Attention) against an explicit computation,
feedback variants, padding and ablations."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmseg.registry import MODELS
from ris_plugins.models.fusion.hierarchical_fusion import HierarchicalHLA
from ris_plugins.models.fusion.hla import HLABlock

from ...conftest import (assert_close, compare, leaf, padded_mask,
                         text_feats)

C_V, C_W, C_S, D = 12, 24, 20, 16  # visual, word, sentence, HLA widths


def hla(**kw) -> HLABlock:
    torch.manual_seed(0)
    return HLABlock(12, C_W, C_S, D, **kw).eval()


def explicit_lwa(block: HLABlock, v: torch.Tensor, w: torch.Tensor,
                 pad: torch.Tensor) -> torch.Tensor:
    """LN(v + Wo softmax_T((v Wq)(w Wk)^T / sqrt(D), pad -> -inf) w Wv),
    written out with F.linear on the block's weights. v (B, N, D)."""
    q = F.linear(v, block.q.weight, block.q.bias)
    k = F.linear(w, block.k.weight, block.k.bias)
    a = torch.einsum('bnd,btd->bnt', q, k) / math.sqrt(D)
    a = a.masked_fill(pad[:, None], float('-inf'))
    val = F.linear(w, block.lw_value.weight, block.lw_value.bias)
    y = F.linear(a.softmax(-1) @ val, block.lw_out.weight, block.lw_out.bias)
    return F.layer_norm(v + y, (D, ), block.v_norm.weight, block.v_norm.bias)


def project(block: HLABlock, visual, text):
    v = F.conv2d(visual, block.v_proj.weight, block.v_proj.bias)
    v = v.flatten(2).transpose(1, 2)  # (B, N, D)
    w = F.linear(text.word_feats, block.w_proj.weight, block.w_proj.bias)
    return v, w


def test_hla_shapes():
    visual, text = torch.randn(2, 12, 3, 4), text_feats()
    out_v, out_w = hla()(visual, text.word_feats, text.pad_mask,
                         text.sent_feat)
    assert out_v.shape == (2, D, 3, 4) and out_w.shape == (2, 5, D)


def test_hla_default_block_masks_pads_and_is_permutation_equivariant():
    """The default block (feedback added to the visual tokens): padded
    words change no output but their own rows; the visual tokens carry no
    position, so permuting them permutes the visual output and leaves the
    words' output unchanged (VWA sums over all tokens)."""
    block = hla()
    torch.manual_seed(1)
    visual, text = torch.randn(2, 12, 3, 4), text_feats(pad=(2, 0))
    args = (text.pad_mask, text.sent_feat)
    with torch.no_grad():
        out_v, out_w = block(visual, text.word_feats, *args)
        words = text.word_feats.clone()
        words[0, -2:] = 100.0  # the padded positions of sample 0
        pad_v, pad_w = block(visual, words, *args)
        perm = torch.randperm(12)
        shuffled = visual.flatten(2)[..., perm].view_as(visual)
        perm_v, perm_w = block(shuffled, text.word_feats, *args)
    torch.testing.assert_close(pad_v, out_v)
    torch.testing.assert_close(pad_w[0, :3], out_w[0, :3])
    torch.testing.assert_close(pad_w[1], out_w[1])
    torch.testing.assert_close(perm_v.flatten(2), out_v.flatten(2)[..., perm])
    torch.testing.assert_close(perm_w, out_w)


def test_hla_without_feedback_is_explicit_bidirectional_attention():
    block = hla(use_feedback=False)
    visual, text = torch.randn(2, 12, 3, 4), text_feats()
    out_v, out_w = block(visual, text.word_feats, text.pad_mask,
                         text.sent_feat)
    v, w = project(block, visual, text)
    ref_v = explicit_lwa(block, v, w, text.pad_mask)  # (B, N, D)
    torch.testing.assert_close(out_v.flatten(2).transpose(1, 2), ref_v)
    # VWA: softmax over the 12 visual tokens of A^T.
    q = F.linear(v, block.q.weight, block.q.bias)
    k = F.linear(w, block.k.weight, block.k.bias)
    p = (torch.einsum('btd,bnd->btn', k, q) / math.sqrt(D)).softmax(-1)
    val = F.linear(v, block.vw_value.weight, block.vw_value.bias)
    y = F.linear(p @ val, block.vw_out.weight, block.vw_out.bias)
    ref_w = F.layer_norm(w + y, (D, ), block.w_norm.weight,
                         block.w_norm.bias)
    real = ~text.pad_mask  # padded words' outputs are never read
    torch.testing.assert_close(out_w[real], ref_w[real])


def test_feedback_changes_output_and_switching_off_restores_lwa():
    fb = hla()  # feedback on (visual, add)
    plain = hla(use_feedback=False)
    plain.load_state_dict(fb.state_dict(), strict=False)  # shared weights
    visual, text = torch.randn(2, 12, 3, 4), text_feats()
    args = (visual, text.word_feats, text.pad_mask, text.sent_feat)
    v_fb, w_fb = fb(*args)
    v_plain, w_plain = plain(*args)
    assert (v_fb - v_plain).abs().max() > 1e-2  # feedback matters
    torch.testing.assert_close(w_fb, w_plain)  # VWA is not fed back
    v, w = project(fb, visual, text)
    torch.testing.assert_close(v_plain.flatten(2).transpose(1, 2),
                               explicit_lwa(fb, v, w, text.pad_mask))
    # Feedback 'visual' + 'add', written out: f = MLP(LWA(v) * s), LWA
    # again on v + f.
    s = F.linear(text.sent_feat, fb.s_proj.weight, fb.s_proj.bias)
    f = fb.feedback(explicit_lwa(fb, v, w, text.pad_mask) * s[:, None])
    ref = explicit_lwa(fb, v + f, w, text.pad_mask)
    torch.testing.assert_close(v_fb.flatten(2).transpose(1, 2), ref)


@pytest.mark.parametrize('at', ['visual', 'attention'])
@pytest.mark.parametrize('mode', ['gate', 'add'])
def test_feedback_variants_differ_from_plain(at, mode):
    fb = hla(feedback_at=at, feedback_mode=mode)
    plain = hla(use_feedback=False)
    plain.load_state_dict(fb.state_dict(), strict=False)
    visual, text = torch.randn(2, 12, 3, 4), text_feats()
    args = (visual, text.word_feats, text.pad_mask, text.sent_feat)
    assert (fb(*args)[0] - plain(*args)[0]).abs().max() > 1e-3
    assert fb.feedback[-1].out_features == (1 if mode == 'gate' else D)


def test_hla_ignores_padded_words():
    block = hla(feedback_at='attention', feedback_mode='gate')
    visual, text = torch.randn(2, 12, 3, 4), text_feats(pad=(2, 0))
    words = text.word_feats.clone()
    words[0, -2:] = 100.0  # padded positions of sample 0
    a = block(visual, text.word_feats, text.pad_mask, text.sent_feat)
    b = block(visual, words, text.pad_mask, text.sent_feat)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1][:, :3], b[1][:, :3])


def test_hla_ablation_structure():
    assert not hasattr(hla(use_vw=False), 'vw_value')
    no_lw = hla(use_lw=False)
    assert not hasattr(no_lw, 'lw_value') and not no_lw.use_feedback
    ca = hla(replace_with_cross_attn=True, num_heads=4)
    assert isinstance(ca.cross_attn, nn.MultiheadAttention)
    visual, text = torch.randn(2, 12, 3, 4), text_feats()
    out_v, out_w = ca(visual, text.word_feats, text.pad_mask, text.sent_feat)
    _, w = project(ca, visual, text)
    torch.testing.assert_close(out_w, w)  # words pass through projected
    with pytest.raises(ValueError, match='feedback_at'):
        hla(feedback_at='words')
    with pytest.raises(ValueError, match='feedback_mode'):
        hla(feedback_mode='mul')
    with pytest.raises(ValueError, match='widths'):
        hla()(torch.randn(1, 8, 2, 2), text.word_feats[:1],
              text.pad_mask[:1], text.sent_feat[:1])


# ------------------------------------------------- use_sdpa switch
# (moved from tests/test_models/test_sdpa_switches.py)
def hla_inputs():
    return (leaf(2, C_V, 3, 5, seed=1), leaf(2, 6, C_W, seed=2),
            padded_mask(), leaf(2, C_S, seed=3))


def hla_forward(module, visual, words, pad_mask, sent):
    return module(visual, words, pad_mask, sent)


# kwargs -> SDPA calls (VWA 1, LWA 1, feedback 1 unless the gate reuses
# the first LWA).
HLA_CASES = {
    'default': (dict(), 3),
    'visual_gate': (dict(feedback_mode='gate'), 3),
    'attention_add': (dict(feedback_at='attention'), 3),
    'attention_gate': (dict(feedback_at='attention', feedback_mode='gate'),
                       2),
    'no_feedback': (dict(use_feedback=False), 2),
    'no_vw': (dict(use_vw=False), 2),
    'no_lw': (dict(use_lw=False), 1),
}


@pytest.mark.parametrize('case', sorted(HLA_CASES))
def test_hla_sdpa_equals_explicit(case, monkeypatch):
    kwargs, calls = HLA_CASES[case]
    torch.manual_seed(0)
    module = HLABlock(C_V, C_W, C_S, D, **kwargs)
    assert module.use_sdpa is False  # explicit products by default
    compare(module, hla_inputs, hla_forward, monkeypatch, sdpa_calls=calls)


def test_hla_sdpa_padded_words_get_the_explicit_uniform_average():
    """VWA rows of padded words: the explicit path's -1e4 row is a uniform
    average over the visual tokens; the SDPA path must give the same (a
    plain SDPA without zeroing their query would not)."""
    torch.manual_seed(0)
    module = HLABlock(C_V, C_W, C_S, D, use_feedback=False, use_lw=False)
    visual, words, pad_mask, sent = hla_inputs()
    with torch.no_grad():
        ref = module(visual, words, pad_mask, sent)[1]
        module.use_sdpa = True
        got = module(visual, words, pad_mask, sent)[1]
        v = module.v_proj(visual).flatten(2).transpose(1, 2)  # (B, N, D)
        w = module.w_proj(words)
        mean = module.w_norm(w[0, 3:] +
                             module.vw_out(module.vw_value(v[0]).mean(0)))
    assert_close(ref[0, 3:], mean)  # the explicit path's pads: the mean
    assert_close(got, ref)


def test_hla_sdpa_switch_from_config_and_under_bf16(monkeypatch):
    """``hla_cfg=dict(use_sdpa=True)`` reaches every block; under CPU bf16
    autocast the fused path runs in bf16 and stays near float32."""
    cfg = dict(type='HierarchicalHLA', in_channels=[C_V, C_V],
               text_channels=C_W, sent_channels=C_S, embed_dims=D,
               hla_cfg=dict(use_sdpa=True))
    torch.manual_seed(0)
    fusion = MODELS.build(cfg)
    assert isinstance(fusion, HierarchicalHLA)
    assert all(b.use_sdpa for b in fusion.blocks)
    visual, words, pad_mask, sent = hla_inputs()
    dtypes = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        dtypes.append(args[0].dtype)
        return original(*args, **kwargs)

    monkeypatch.setattr(F, 'scaled_dot_product_attention', spy)
    block = fusion.blocks[0].eval()
    with torch.no_grad():
        ref = block(visual, words, pad_mask, sent)[0]
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = block(visual, words, pad_mask, sent)[0]
    assert dtypes == [torch.float32] * 3 + [torch.bfloat16] * 3
    # bf16 (unit roundoff 2^-8) through 3 attentions and layer norms.
    assert_close(ref, low.float(), tol=5e-2)
