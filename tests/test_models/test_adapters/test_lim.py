"""LIMPrompts (BarLeRIa's local intertwining prompts) in both directions."""
import pytest
import torch
import torch.nn as nn

from ris_plugins.models import LIMPrompts

from ...conftest import LIM_HOOK, TINY_LIM, n_params, tiny_dual_encoder, tokens


def test_lim_parameter_counts():
    lim = LIMPrompts(vision_to_text=True)  # 512 -> 32 -> 768 and back
    assert n_params(lim.t2v) == 512 * 32 + 32 + 32 * 768 + 768 == 41_760
    assert n_params(lim.v2t) == 41_504
    with pytest.raises(ValueError, match='and/or'):
        LIMPrompts(text_to_vision=False)


def _perturb_padding_embedding(bb):
    """Change the embedding of token id 0 (padding) only."""
    table = bb.text.clip.text_model.embeddings.token_embedding.weight
    with torch.no_grad():
        table[0] += 3.0


@pytest.mark.parametrize('mask_padding', [True, False])
def test_lim_text_to_vision_padding(mask_padding):
    """Masked: prompts from padding tokens cannot influence the image
    features; as released (unmasked) they do."""
    lim = dict(TINY_LIM, vision_to_text=False, mask_padding=mask_padding)
    bb = tiny_dual_encoder(interactions=[dict(after=(0, 0), module=lim)],
                           visual_taps=(2, )).eval()
    img, tok = torch.randn(2, 3, 64, 64), tokens(5, 8)
    with torch.no_grad():
        before = bb(img, tok).visual
        _perturb_padding_embedding(bb)
        after = bb(img, tok).visual
    same = all(torch.allclose(x, y, atol=1e-6)
               for x, y in zip(before, after))
    assert same == mask_padding
    assert before[-1].shape == (2, 16, 4, 4)  # prompts stripped


def test_lim_vision_to_text_fixes_mask_eot_and_pad_mask():
    bb = tiny_dual_encoder(interactions=[LIM_HOOK], visual_taps=(2, )).eval()
    tok = tokens(5, 8)
    with torch.no_grad():
        out = bb(torch.randn(2, 3, 64, 64), tok)
    words, sent, pad = out.text
    assert words.shape == (2, 9, 24)  # L + 1: the image token first
    assert pad.tolist() == [[False] * 6 + [True] * 3, [False] * 9]
    eot = torch.tensor([4, 7]) + 1  # EOT moved by the prepended token
    want = bb.text.clip.text_projection(words[torch.arange(2), eot])
    torch.testing.assert_close(sent, want)
    # As released, the token comes from the CLS token after ln_pre, which
    # is cls_token + pos_embed[0] (no image content yet): another image
    # gives the same words; the learned token still changes every word
    # (the causal mask lets all words see position 0).
    with torch.no_grad():
        other = bb(torch.randn(2, 3, 64, 64), tok).text.word_feats
        nn.init.normal_(bb.interactions[0].v2t[2].bias)
        moved = bb(torch.randn(2, 3, 64, 64), tok).text.word_feats
    torch.testing.assert_close(other, words)
    assert bool(((moved - words).abs().amax(-1) > 1e-4).all())
