"""``use_sdpa`` switches of our attention modules besides PWAM (PWAM's are
in ``test_speed_switches.py``): HARIS's HLA block, its query-token mask
decoder and the CRIS / ETRIS vision-language decoder. With the switch the
attention goes through ``F.scaled_dot_product_attention``; outputs and
gradients equal the explicit products' to float32 rounding (1e-5), with
padded words in the batch, and the quantization adapters still see
``matmul1`` / ``matmul2``.

Each test runs the same module (deep copy, same weights) with the switch
off and on; a spy on ``F.scaled_dot_product_attention`` proves which path
ran, so a switch that does nothing fails.
"""
import copy
import os.path as osp
from typing import Callable, Dict, List, Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.models.fusion.hierarchical_fusion import HierarchicalHLA
from ris_plugins.models.fusion.hla import HLABlock
from ris_plugins.models.heads.query_mask_head import QueryMaskHead
from ris_plugins.models.heads.vl_transformer_decoder import \
    VLTransformerDecoder
from ris_plugins.models.utils import TextFeatures
from ris_plugins.quantization.attention import convert_attention
from ris_plugins.utils.synthetic import input_size, tokenize

from ..conftest import ROOT

C_V, C_W, C_S, D = 12, 24, 20, 16  # visual, word, sentence, model widths
HARIS_DEMO = osp.join(
    ROOT, 'configs', 'demo',
    'haris-small_tiny-sam-clip_1xb16-2k_refshapes-160x160.py')


def padded_mask(batch: int = 2, length: int = 6) -> torch.Tensor:
    """(B, T) bool, True at padding: sample 0 has 3 real words, 3 pads;
    sample 1 has none."""
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[0, 3:] = True
    return mask


def leaf(*shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_()


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5):
    """Max abs difference <= tol * (1 + max |a|) (float32 rounding)."""
    scale = 1 + a.abs().max().item()
    err = (a - b).abs().max().item()
    assert err <= tol * scale, (err, scale)


class SDPASpy:
    """Counts calls of ``F.scaled_dot_product_attention`` (also those torch's
    ``F.multi_head_attention_forward`` makes: it looks the name up in the
    same module)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = F.scaled_dot_product_attention

        def spy(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(F, 'scaled_dot_product_attention', spy)


Result = Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]


def run(module: nn.Module, make_inputs: Callable[[], Tuple],
        forward: Callable) -> Result:
    """Forward fresh leaf inputs, backward a fixed function of the outputs;
    returns outputs + input grads, and {parameter name: grad}."""
    module.zero_grad()
    inputs = make_inputs()
    outs = forward(module, *inputs)
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() +
               o.square().mean() for o in outs)
    loss.backward()
    tensors = [o.detach() for o in outs]
    tensors += [x.grad for x in inputs if isinstance(x, torch.Tensor)
                and x.requires_grad]
    grads = {n: p.grad.clone() for n, p in module.named_parameters()
             if p.grad is not None}
    return tensors, grads


def assert_same_run(ref, got) -> None:
    (outs_a, grads_a), (outs_b, grads_b) = ref, got
    assert len(outs_a) == len(outs_b)
    for a, b in zip(outs_a, outs_b):
        if a is None or b is None:  # an input the module does not use
            assert a is None and b is None
            continue
        assert_close(a, b)
    assert grads_a, 'no parameter received a gradient'
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert_close(grads_a[name], grads_b[name])


def switched(module: nn.Module) -> nn.Module:
    """A deep copy with every ``use_sdpa`` flag in it set to True."""
    other = copy.deepcopy(module)
    flags = [m for m in other.modules() if hasattr(m, 'use_sdpa')]
    assert flags, 'no use_sdpa switch in the module'
    for m in flags:
        m.use_sdpa = True
    return other


def compare(module: nn.Module, make_inputs, forward, monkeypatch,
            sdpa_calls: int, explicit_calls: int = 0):
    """Explicit (switch off) vs SDPA (on): same outputs, input and
    parameter gradients; the spy sees ``explicit_calls`` then
    ``sdpa_calls`` SDPA calls."""
    spy = SDPASpy(monkeypatch)
    ref = run(module, make_inputs, forward)
    assert spy.calls == explicit_calls
    got = run(switched(module), make_inputs, forward)
    assert spy.calls - explicit_calls == sdpa_calls
    assert_same_run(ref, got)


# ------------------------------------------------------------------- HLA
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


# --------------------------------------------------- query mask decoder
def query_head(**kwargs) -> QueryMaskHead:
    torch.manual_seed(0)
    head = QueryMaskHead(in_channels=D, channels=8, num_layers=2,
                         num_heads=2, ffn_channels=32, num_classes=2,
                         out_channels=1, **kwargs)
    return head.eval()  # BN running stats and dropout fixed


def query_inputs():
    return leaf(2, D, 4, 5, seed=4), leaf(2, 6, D, seed=5), padded_mask()


def query_forward(head, feat, words, pad_mask):
    text = TextFeatures(words, words.mean(1), pad_mask)
    return [head([feat], text)]


def test_query_head_sdpa_equals_explicit(monkeypatch):
    head = query_head()
    assert head.use_sdpa is False
    # 2 layers x (self-attention + cross-attention)
    compare(head, query_inputs, query_forward, monkeypatch, sdpa_calls=4)


def test_query_head_sdpa_in_training_mode_without_dropout(monkeypatch):
    """Training mode (attention dropout 0, BN batch statistics): the same
    outputs and gradients."""
    head = query_head(decoder_dropout=0.0).train()
    compare(head, query_inputs, query_forward, monkeypatch, sdpa_calls=4)


def test_query_head_sdpa_switch_keeps_ptq_products(monkeypatch):
    """A converted head (PTQ's attention adapters) computes through
    ``matmul1`` / ``matmul2`` with the switch on, with the same logits."""
    head = query_head(use_sdpa=True)
    feat, words, pad_mask = query_inputs()
    with torch.no_grad():
        ref = query_forward(head, feat, words, pad_mask)[0]
    convert_attention(head)
    calls = []
    for name, mod in head.named_modules():
        if name.endswith('matmul1') or name.endswith('matmul2'):
            mod.register_forward_hook(lambda *a: calls.append(1))
    spy = SDPASpy(monkeypatch)
    with torch.no_grad():
        got = query_forward(head, feat, words, pad_mask)[0]
    assert len(calls) == 2 * 4 and spy.calls == 0
    assert_close(ref, got)


# --------------------------------------------- CRIS / ETRIS VL decoder
def vl_inputs():
    return leaf(2, D, 4, 5, seed=6), leaf(2, 6, C_W, seed=7), padded_mask()


def vl_forward(decoder, vis, words, pad_mask):
    return [decoder(vis, words, pad_mask)]


def vl_decoder(use_sdpa: bool) -> VLTransformerDecoder:
    torch.manual_seed(0)
    return VLTransformerDecoder(2, D, 2, 32, 0.1, C_W,
                                use_sdpa=use_sdpa).eval()


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


# ------------------------------------------------------ whole HARIS demo
def test_haris_demo_model_with_all_sdpa_switches(monkeypatch):
    """The HARIS demo model with SDPA in its HLA blocks and query decoder
    (config keys ``model.fusion.hla_cfg.use_sdpa`` and
    ``model.decode_head.use_sdpa``) gives the default model's logits and
    trainable gradients (eval mode: dropout and BN statistics fixed)."""
    cfg = Config.fromfile(HARIS_DEMO)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    cfg.merge_from_dict({'model.fusion.hla_cfg.use_sdpa': True,
                         'model.decode_head.use_sdpa': True})
    built = MODELS.build(cfg.model)
    assert all(b.use_sdpa for b in built.fusion.blocks)
    assert built.decode_head.use_sdpa
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 3, *input_size(cfg), generator=g)
    texts = [tokenize(cfg, s) for s in ('the red circle',
                                        'the big blue square on the left')]
    tokens = torch.stack([t['text_tokens'] for t in texts])  # (2, L)
    mask = torch.stack([t['text_mask'] for t in texts])
    assert mask[0].sum() < mask[1].sum() < mask.shape[1]  # padded words
    spy = SDPASpy(monkeypatch)

    def forward(m, img):
        return [m(img, tokens, mask)]

    ref = run(model, lambda: (img, ), forward)
    calls = spy.calls
    got = run(switched(model), lambda: (img, ), forward)
    # 3 per HLA block (VWA, LWA, feedback) + 2 per decoder layer more
    # than the default (whose own calls are the CLIP text encoder's)
    extra = 3 * len(model.fusion.blocks) + 2 * len(model.decode_head.layers)
    assert spy.calls - 2 * calls == extra == 3 * 3 + 2 * 1
    assert_same_run(ref, got)
