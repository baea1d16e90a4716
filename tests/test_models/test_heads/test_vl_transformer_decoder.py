"""VLTransformerDecoder (CRIS's vision-language decoder)."""
import pytest
import torch
import torch.nn as nn

from mmseg.registry import MODELS
from ris_plugins.models import VLTransformerDecoder
from ris_plugins.quantization.attention import convert_attention

from ...conftest import (SDPASpy, assert_close, assert_same_step, compare,
                         cris_text, leaf, padded_mask, saved_bytes, step,
                         with_cp_copy)


def test_vl_decoder_masks_padding_words():
    dec = VLTransformerDecoder(num_layers=2, dim=32, num_heads=2,
                               ffn_dim=64).eval()
    vis = torch.randn(2, 32, 4, 5)
    text = cris_text()
    words = text.word_feats.clone()
    words[:, 6] += 10.0  # a padding position (pad_mask[:, 5:])
    real = text.word_feats.clone()
    real[:, 1] += 10.0  # a real word
    with torch.no_grad():
        out = dec(vis, text.word_feats, text.pad_mask)
        torch.testing.assert_close(dec(vis, words, text.pad_mask), out)
        assert not torch.allclose(dec(vis, real, text.pad_mask), out)
    assert out.shape == (2, 32, 4, 5)
    with pytest.raises(ValueError, match='word width'):
        dec(vis, torch.randn(2, 8, 16), text.pad_mask)


C_W, C_S, D = 24, 20, 16  # word, sentence, decoder widths


def vl_decoder(use_sdpa: bool = True) -> VLTransformerDecoder:
    """The tiny decoder of the switch tests (2 layers, width 16,
    2 heads, FFN 32, dropout 0.1, 24-wide words) in eval mode;
    the with_cp tests put it in training mode."""
    torch.manual_seed(0)
    return VLTransformerDecoder(2, D, 2, 32, 0.1, C_W,
                                use_sdpa=use_sdpa).eval()


# ------------------------------------------------- use_sdpa switch
# (moved from tests/test_models/test_sdpa_switches.py)
def vl_inputs():
    return leaf(2, D, 4, 5, seed=6), leaf(2, 6, C_W, seed=7), padded_mask()


def vl_forward(decoder, vis, words, pad_mask):
    return [decoder(vis, words, pad_mask)]


def test_vl_decoder_sdpa_equals_explicit(monkeypatch):
    """The decoder always ran torch's SDPA path (``need_weights=False``):
    that stays the default; ``use_sdpa=False`` is torch's explicit path
    with the same outputs and gradients."""
    assert VLTransformerDecoder().layers[0].use_sdpa is True
    # 2 layers x (self-attention + cross-attention)
    compare(vl_decoder(False), vl_inputs, vl_forward, monkeypatch,
            sdpa_calls=4)


def test_vl_decoder_switch_from_cris_head_config_keeps_ptq_products(
        monkeypatch):
    head = MODELS.build(
        dict(type='CRISHead', in_channels=D, channels=8, sent_channels=C_S,
             text_channels=C_W, num_layers=2, num_heads=2, ffn_channels=32,
             num_classes=2, out_channels=1, use_sdpa=False))
    assert [layer.use_sdpa for layer in head.decoder.layers] == [False] * 2
    decoder = vl_decoder(True)
    vis, words, pad_mask = vl_inputs()
    with torch.no_grad():
        ref = decoder(vis, words, pad_mask)
    convert_attention(decoder)
    spy = SDPASpy(monkeypatch)
    with torch.no_grad():
        got = decoder(vis, words, pad_mask)
    assert spy.calls == 0
    assert all('matmul1' in m._modules for m in decoder.modules()
               if isinstance(m, nn.MultiheadAttention))
    assert_close(ref, got)


# -------------------------------------------------- with_cp switch
# (moved from tests/test_models/test_head_checkpointing.py)
def cp_vl_inputs():
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[0, 3:] = True  # sample 0: 3 words, 3 padding
    return leaf(2, 16, 4, 5, seed=1), leaf(2, 6, 24, seed=2), pad


def cp_vl_forward(decoder, vis, words, pad):
    return decoder(vis, words, pad)


def test_vl_decoder_with_cp_same_outputs_and_grads_with_dropout(
        checkpoint_calls):
    """Training mode with dropout 0.1: the recomputation replays the same
    dropout masks, so outputs and gradients are unchanged."""
    decoder = vl_decoder()
    assert decoder.with_cp is False
    ref = step(decoder, cp_vl_inputs, cp_vl_forward)
    assert not checkpoint_calls
    got = step(with_cp_copy(vl_decoder()), cp_vl_inputs, cp_vl_forward)
    assert len(checkpoint_calls) == 2  # one per layer
    assert_same_step(ref, got)
    # and the dropout is really on: another seed changes the output
    other = step(decoder, cp_vl_inputs, cp_vl_forward, seed=1)
    assert not torch.allclose(ref[0][0], other[0][0])


def test_vl_decoder_with_cp_keeps_fewer_activations(checkpoint_calls):
    plain = saved_bytes(vl_decoder(), cp_vl_inputs, cp_vl_forward)
    kept = saved_bytes(with_cp_copy(vl_decoder()), cp_vl_inputs, cp_vl_forward)
    assert kept < 0.5 * plain, (kept, plain)
    with torch.no_grad():
        with_cp_copy(vl_decoder()).train()(*cp_vl_inputs())
    assert len(checkpoint_calls) == 2  # the training forward only
