"""Attention adapters: converted modules give the original FP outputs, keep
their parameters, and really compute through ``matmul1`` / ``matmul2``.
The reference is always the unconverted library / project module.  Our
own attention modules (PWAM's ``PixelWordAttention``, CRIS's
``DenseAttentionPool2d``) have the ``MatMul`` children natively."""
import copy

import pytest
import torch
import torch.nn as nn
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.backbones.vit_sam import Attention as SAMAttention
from mmpretrain.models.multimodal.chinese_clip.chinese_clip import \
    AttentionPool2d
from mmpretrain.models.utils.attention import (MultiheadAttention,
                                               ShiftWindowMSA, WindowMSA)
from transformers import BertConfig, BertModel, CLIPTextConfig, CLIPTextModel

from ris_plugins.models import MultiModalSwin
from ris_plugins.models.backbones import DenseAttentionPool2d
from ris_plugins.models.fusion.pwam import PixelWordAttention
from ris_plugins.quantization.attention import (ATTENTION_ADAPTERS,
                                                convert_attention,
                                                find_unconverted_attention,
                                                register_attention_adapter)
from ris_plugins.quantization.matmul import MatMul
from ..conftest import TINY_SWIN, text


NATIVE = (PixelWordAttention, DenseAttentionPool2d)


class SkewMatMul(nn.Module):
    """``a @ b`` plus ramps over its last two dims (0..10 by column, times
    1..2 by row): pushes attention onto the last keys (matmul1) or skews
    the context differently per token (so InstanceNorm cannot undo it,
    matmul2). A module that calls its MatMul child changes its output."""

    def forward(self, a, b):
        out = torch.matmul(a, b)
        n, m = out.shape[-2:]
        return out + torch.linspace(1, 2, n)[:, None] * torch.linspace(
            0, 10, m)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def randomize(module, std=0.3, seed=0):
    """Non-trivial weights (zero-initialised position tables etc.)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return module.eval()


def flat(out):
    """Tensors of a (nested) output, in order; None kept."""
    if isinstance(out, torch.Tensor) or out is None:
        return [out]
    if hasattr(out, 'to_tuple'):
        out = out.to_tuple()
    return [t for o in out for t in flat(o)]


def assert_same(a, b, atol=1e-6):
    fa, fb = flat(a), flat(b)
    assert len(fa) == len(fb)
    for x, y in zip(fa, fb):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(x, y, atol=atol, rtol=1e-6)


def check(module, *args, expected=('', ), live=None, tol=1e-6, **kwargs):
    """Convert a deepcopy of ``module``; same outputs, same state_dict,
    isinstance kept, both MatMuls live in the modules named ``live``
    (default: all of ``expected``); modules of a library class get a new
    (adapter) class. ``tol``: output tolerance (fused kernels -> explicit
    products differ by float32 round-off). Returns the converted copy."""
    module.eval()
    with torch.no_grad():
        ref = module(*args, **kwargs)
    conv = copy.deepcopy(module)
    assert convert_attention(conv) == list(expected)
    assert convert_attention(conv) == []  # idempotent
    ref_sd, sd = module.state_dict(), conv.state_dict()
    assert list(sd) == list(ref_sd)
    assert all(torch.equal(sd[k], ref_sd[k]) for k in sd)
    with torch.no_grad():
        assert_same(conv(*args, **kwargs), ref, atol=tol)
    for name in expected if live is None else live:
        sub = conv.get_submodule(name)
        orig = module.get_submodule(name)
        assert isinstance(sub, type(orig))
        assert (type(sub) is type(orig)) == isinstance(orig, NATIVE)
        assert isinstance(sub.matmul1, MatMul)
        for child in ('matmul1', 'matmul2'):
            live = copy.deepcopy(conv)
            setattr(live.get_submodule(name), child, SkewMatMul())
            with torch.no_grad():
                out = flat(live(*args, **kwargs))
            diff = max((x - y).abs().max().item()
                       for x, y in zip(out, flat(ref)) if x is not None)
            assert diff > 1e-3, f'{name}.{child} is not on the path'
    assert find_unconverted_attention(conv) == []
    return conv


@pytest.mark.parametrize('shift', [0, 2])
def test_swin_window_msa(shift):
    attn = randomize(ShiftWindowMSA(8, 2, window_size=4, shift_size=shift))
    check(attn, torch.randn(2, 64, 8), (8, 8), expected=['w_msa'])


def test_window_msa_explicit_mask():
    attn = randomize(WindowMSA(8, (2, 2), 2))
    mask = torch.zeros(2, 4, 4)
    mask[1, :, 2:] = -100.0
    check(attn, torch.randn(4, 4, 8), mask=mask)


@pytest.mark.parametrize(
    'kwargs',
    [{},
     dict(qk_scale=0.5),
     dict(
         input_dims=6, num_heads=1, v_shortcut=True, layer_scale_init_value=.1)
     ])
def test_mmpretrain_multihead_attention(kwargs):
    attn = randomize(MultiheadAttention(8, **{'num_heads': 2, **kwargs}))
    check(attn, torch.randn(2, 5, kwargs.get('input_dims', 8)))


@pytest.mark.parametrize('rel', [False, True])
def test_vit_sam_attention(rel):
    attn = randomize(SAMAttention(8, 2, use_rel_pos=rel, input_size=(3, 4)))
    check(attn, torch.randn(2, 3, 4, 8))


def test_vision_transformer_whole_model():
    vit = VisionTransformer(
        arch=dict(
            embed_dims=16, num_layers=2, num_heads=2, feedforward_channels=32),
        img_size=32,
        patch_size=8)
    randomize(vit, std=0.2)
    check(
        vit,
        torch.randn(2, 3, 32, 32),
        expected=[f'layers.{i}.attn' for i in range(2)])


def test_multimodal_swin_with_pwam_whole_model():
    swin = randomize(MultiModalSwin(text_channels=32, **TINY_SWIN), std=0.2)
    msa = [
        f'stages.{s}.blocks.{b}.attn.w_msa' for s in range(4) for b in range(2)
    ]
    pwa = [f'pwams.{s}.image_lang_att' for s in range(4)]
    check(
        swin,
        torch.randn(2, 3, 64, 64),
        text(),
        expected=msa,  # the PWAMs compute through their MatMuls natively
        live=[msa[1], pwa[-1]])  # a shifted-window block, last PWAM


@pytest.mark.parametrize('sdpa', [False, True])
def test_pixel_word_attention(sdpa):
    """Native products; with ``use_sdpa`` the conversion switches them on."""
    pwa = randomize(PixelWordAttention(8, 6, num_heads=2, use_sdpa=sdpa))
    mask = torch.ones(2, 1, 5)
    mask[0, :, 3:] = 0  # padded words
    conv = check(pwa, torch.randn(2, 7, 8), torch.randn(2, 6, 5), mask,
                 expected=[''] if sdpa else [], live=[''],
                 tol=1e-5 if sdpa else 0)
    assert not conv.use_sdpa


def test_pixel_word_attention_is_bit_identical_to_upstream_products():
    """The MatMul children are exactly upstream LAVT's ``torch.matmul``
    form (``lib/backbone.py`` ``SpatialImageLanguageAttention``), and add
    no state-dict keys."""
    pwa = randomize(PixelWordAttention(8, 6, num_heads=2))
    x, words = torch.randn(2, 7, 8), torch.randn(2, 6, 5)
    mask = torch.ones(2, 1, 5)
    mask[0, :, 3:] = 0
    with torch.no_grad():
        q = pwa.f_query(x.transpose(1, 2)).transpose(1, 2)
        q = q.reshape(2, 7, 2, 4).transpose(1, 2)  # (B, h, N, d)
        k = (pwa.f_key(words) * mask).reshape(2, 2, 4, 5)
        v = (pwa.f_value(words) * mask).reshape(2, 2, 4, 5)
        sim = torch.matmul(q, k) * 8**-0.5 + (1e4 * mask.unsqueeze(1) - 1e4)
        out = torch.matmul(sim.softmax(dim=-1), v.transpose(2, 3))
        out = out.transpose(1, 2).reshape(2, 7, 8)
        want = pwa.W(out.transpose(1, 2)).transpose(1, 2)
        assert torch.equal(pwa(x, words, mask), want)
    assert list(pwa.state_dict()) == [
        'f_query.0.weight', 'f_query.0.bias', 'f_key.0.weight',
        'f_key.0.bias', 'f_value.0.weight', 'f_value.0.bias', 'W.0.weight',
        'W.0.bias']


def test_restore_undoes_every_conversion():
    """quantize_model then restore_model: library modules get their class
    back without MatMul children, native ones keep plain MatMuls and their
    ``use_sdpa``; outputs are bit-identical to before."""
    from ris_plugins.quantization import quantize_model, restore_model
    model = nn.ModuleDict(dict(
        pwa=randomize(PixelWordAttention(8, 6, 2, use_sdpa=True)),
        dense=randomize(DenseAttentionPool2d(3, 8, 2, output_dim=6)),
        msa=randomize(WindowMSA(8, (2, 2), 2))))
    x, words, mask = torch.randn(2, 7, 8), torch.randn(2, 6, 5), torch.ones(
        2, 1, 5)
    img, win = torch.randn(2, 8, 4, 5), torch.randn(4, 4, 8)

    def outputs():
        with torch.no_grad():
            return (model.pwa(x, words, mask), model.dense(img),
                    model.msa(win))

    before = outputs()
    state = quantize_model(model, dict(
        w_bits=8, a_bits=8, global_qconfig=dict(
            w_qscheme=dict(type='UniformQuantizer'),
            m_qscheme=dict(type='UniformQuantizer'))))
    assert state.converted_attention == ['pwa', 'dense', 'msa']
    assert not model.pwa.use_sdpa and not model.dense.use_sdpa
    assert {'pwa.matmul1', 'dense.matmul2', 'msa.matmul1'} <= set(
        state.layers)
    restore_model(model, state)
    assert type(model.msa) is WindowMSA and 'matmul1' not in model.msa._modules
    assert model.pwa.use_sdpa and model.dense.use_sdpa
    assert all(type(getattr(m, c)) is MatMul for m in (model.pwa, model.dense)
               for c in ('matmul1', 'matmul2'))
    assert not state.converted_attention and not state._undo
    for a, b in zip(outputs(), before):
        assert torch.equal(a, b)


def tiny_bert(impl, **cfg):
    config = BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        attn_implementation=impl,
        **cfg)
    return randomize(BertModel(config), std=0.2)


BERT_CASES = {
    'eager': ('eager', {}, {}),
    'sdpa': ('sdpa', {}, {}),
    'sdpa_attentions': ('sdpa', {}, dict(output_attentions=True)),
    'relative':
    ('eager', dict(position_embedding_type='relative_key_query'), {}),
    'sdpa_decoder_cross':
    ('sdpa', dict(is_decoder=True, add_cross_attention=True), 'cross'),
    # no padding: transformers passes mask None and SDPA's is_causal
    'sdpa_decoder_causal': ('sdpa', dict(is_decoder=True), 'no_padding'),
}


@pytest.mark.parametrize('case', list(BERT_CASES))
def test_bert(case):
    impl, cfg, kwargs = BERT_CASES[case]
    model = tiny_bert(impl, **cfg)
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 4:] = 0  # padding
    if kwargs == 'no_padding':
        mask[:], kwargs = 1, {}
    if kwargs == 'cross':
        kwargs = dict(
            encoder_hidden_states=torch.randn(2, 3, 16),
            encoder_attention_mask=torch.tensor([[1, 1, 0], [1, 1, 1]]))
    names = [f'encoder.layer.{i}.attention.self' for i in range(2)]
    if case == 'sdpa_decoder_cross':
        names = [
            n for i in range(2)
            for n in (f'encoder.layer.{i}.attention.self',
                      f'encoder.layer.{i}.crossattention.self')
        ]
    check(model, input_ids=ids, attention_mask=mask, expected=names, **kwargs)


@pytest.mark.parametrize('impl', ['eager', 'sdpa'])
def test_clip_text_model(impl):
    config = CLIPTextConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        attn_implementation=impl)
    model = randomize(CLIPTextModel(config), std=0.2)
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 5:] = 0
    check(
        model,
        input_ids=ids,
        attention_mask=mask,
        output_attentions=impl == 'eager',
        expected=[
            f'text_model.encoder.layers.{i}.self_attn' for i in range(2)
        ])


MHA_CASES = {
    'plain': (dict(), dict()),
    'batch_first_bool_masks': (dict(batch_first=True), 'masks_bool'),
    'kvdim_float_kpm_heads': (dict(kdim=6,
                                   vdim=5), dict(average_attn_weights=False)),
    'bias_kv_zero_attn_3d_mask':
    (dict(add_bias_kv=True, add_zero_attn=True, bias=False), 'mask3d'),
    'no_weights': (dict(), dict(need_weights=False)),
}


@pytest.mark.parametrize('case', list(MHA_CASES))
def test_torch_multihead_attention(case):
    cfg, kwargs = MHA_CASES[case]
    mha = randomize(nn.MultiheadAttention(8, 2, dropout=0.1, **cfg))
    b, n, m = 2, 4, 5
    q = torch.randn(n, b, 8)
    k = torch.randn(m, b, cfg.get('kdim', 8))
    v = torch.randn(m, b, cfg.get('vdim', 8))
    kpm = torch.zeros(b, m)
    kpm[0, 3:] = float('-inf')
    if kwargs == 'masks_bool':
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))
        kwargs = dict(
            key_padding_mask=kpm.isinf(),
            attn_mask=torch.ones(n, m, dtype=torch.bool).triu(2))
    elif kwargs == 'mask3d':
        kwargs = dict(attn_mask=torch.randn(b * 2, n, m), key_padding_mask=kpm)
    else:
        kwargs = dict(kwargs, key_padding_mask=kpm)
    check(mha, q, k, v, **kwargs)


def test_torch_multihead_attention_unbatched():
    mha = randomize(nn.MultiheadAttention(8, 2))
    x = torch.randn(4, 8)
    check(mha, x, x, x, attn_mask=torch.randn(4, 4))


def test_clip_attention_pools():
    pool = randomize(AttentionPool2d(3, 8, 2, output_dim=6))
    check(pool, torch.randn(2, 8, 3, 3))
    # default: CRIS's fused MHSA, switched to the MatMuls by the conversion
    dense = randomize(DenseAttentionPool2d(3, 8, 2, output_dim=6))
    assert check(dense, torch.randn(2, 8, 4, 5)).use_sdpa is False
    explicit = randomize(DenseAttentionPool2d(3, 8, 2, 6, use_sdpa=False))
    check(explicit, torch.randn(2, 8, 4, 5), expected=[], live=[''])


class MyAttention(nn.Module):
    """An attention module nobody wrote an adapter for."""

    def forward(self, x):
        return x


def test_find_unconverted_and_registry_errors():
    model = nn.ModuleDict(
        dict(
            bert=tiny_bert('sdpa'),
            mine=MyAttention(),
            swin=WindowMSA(8, (2, 2), 2)))
    # containers (BertAttention) around adaptable modules are not reported
    assert find_unconverted_attention(model) == ['mine']
    convert_attention(model)
    assert find_unconverted_attention(model) == ['mine']
    with pytest.raises(KeyError, match='already registered'):
        register_attention_adapter(WindowMSA)(lambda m: m)
    with pytest.raises(TypeError, match='must subclass'):
        register_attention_adapter(MyAttention)(nn.Linear)
    assert MyAttention not in ATTENTION_ADAPTERS
