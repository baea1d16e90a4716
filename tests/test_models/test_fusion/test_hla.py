"""HLABlock (HARIS's Human-Like Attention) against an explicit computation,
feedback variants, padding and ablations."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ris_plugins.models.fusion.hla import HLABlock

from ...conftest import text_feats

C_W, C_S, D = 24, 20, 16  # word, sentence, HLA widths


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
