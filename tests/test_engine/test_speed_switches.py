"""Speed switches keep the outputs: activation checkpointing (``with_cp``)
of every backbone, PWAM's ``scaled_dot_product_attention`` path and
``channels_last`` give the default model's outputs and gradients to
float32 rounding (1e-5), and ``with_cp`` really stops saving the blocks'
activations. bf16 autocast is covered in
``tests/test_engine/test_cpu_amp_optim_wrapper.py``.

Models are the demo configs with weights set by parameter name
(:func:`name_seeded_`), so the default and the switched model hold the
same weights.
"""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.engine import to_channels_last
from ris_plugins.models.fusion.pwam import PWAM, PixelWordAttention
from ris_plugins.models.utils import TextFeatures
from ris_plugins.quantization.attention import convert_attention

from ..conftest import ROOT, demo_inputs, name_seeded_


def demo(name: str) -> str:
    return osp.join(ROOT, 'configs', 'demo', name)


LAVT = demo('lavt-small_swin-32-minilm_1xb16-1500i_refshapes-160x160.py')
CRIS = demo('cris-small_tiny-rn-minilm_1xb16-2k_refshapes-160x160.py')
ETRIS = demo('etris-small_tiny-vit-clip_1xb16-2k_refshapes-160x160.py')
HARIS = demo('haris-small_tiny-sam-clip_1xb16-2k_refshapes-160x160.py')
BASELINE = demo('ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py')

# config, overrides that switch activation checkpointing on. HARIS's SAM
# encoder is frozen in the config (nothing to save); it is unfrozen here
# so that checkpointing has something to do.
WITH_CP = {
    'lavt': (LAVT, {'model.backbone.with_cp': True}),
    'cris': (CRIS, {'model.backbone.with_cp': True}),
    'etris': (ETRIS, {'model.backbone.visual.with_cp': True}),
    'haris': (HARIS, {'model.backbone.with_cp': True}),
}
UNFROZEN = {'haris': {'model.backbone.frozen': False}}


def build(config: str, overrides: dict = None) -> torch.nn.Module:
    cfg = Config.fromfile(config)
    cfg.merge_from_dict(overrides or {})
    return name_seeded_(MODELS.build(cfg.model)), cfg


def step(model: torch.nn.Module, cfg: Config, seed: int = 0):
    """Seeded training-mode forward (dropout / drop-path on) and backward of
    the mean squared logits; returns logits and {name: grad}."""
    model.train()
    img, tokens, mask = demo_inputs(cfg)
    torch.manual_seed(seed)
    out = model(img, tokens, mask)  # (2, C, h, w)
    out.pow(2).mean().backward()
    grads = {
        n: p.grad.clone()
        for n, p in model.named_parameters() if p.grad is not None
    }
    return out.detach(), grads


def assert_same(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5):
    """Max abs difference <= tol * (1 + max |a|) (float32 rounding)."""
    scale = 1 + a.abs().max().item()
    assert (a - b).abs().max().item() <= tol * scale, (
        (a - b).abs().max().item(), scale)


def assert_same_step(ref, got, tol: float = 1e-5):
    (out_a, grads_a), (out_b, grads_b) = ref, got
    assert_same(out_a, out_b, tol)
    assert grads_a.keys() == grads_b.keys()
    assert grads_a, 'no parameter received a gradient'
    for name in grads_a:
        assert_same(grads_a[name], grads_b[name], tol)


def saved_bytes(model: torch.nn.Module, cfg: Config) -> int:
    """Bytes of the tensors autograd saves for backward inside the
    backbone during one training-mode forward (tensors that the
    non-reentrant checkpoint keeps are packed by it and not seen here; the
    reentrant one mmpretrain's Swin uses records nothing inside)."""
    img, tokens, mask = demo_inputs(cfg)
    total = [0]

    def pack(t: torch.Tensor):
        total[0] += t.numel() * t.element_size()
        return t

    ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    handles = [
        model.backbone.register_forward_pre_hook(lambda *a: ctx.__enter__()),
        model.backbone.register_forward_hook(
            lambda *a: ctx.__exit__(None, None, None))
    ]
    model.train()
    model(img, tokens, mask)
    for h in handles:
        h.remove()
    return total[0]


@pytest.mark.parametrize('name', sorted(WITH_CP))
def test_with_cp_same_outputs_and_grads(name):
    config, switch = WITH_CP[name]
    base = UNFROZEN.get(name, {})
    model, cfg = build(config, base)
    ref = step(model, cfg)
    model_cp, cfg_cp = build(config, dict(base, **switch))
    assert_same_step(ref, step(model_cp, cfg_cp))


@pytest.mark.parametrize('name', sorted(WITH_CP))
def test_with_cp_saves_fewer_activations(name):
    config, switch = WITH_CP[name]
    base = UNFROZEN.get(name, {})
    plain = saved_bytes(*build(config, base))
    ckpt = saved_bytes(*build(config, dict(base, **switch)))
    print(name, ckpt / plain)
    assert ckpt < 0.5 * plain, (name, ckpt, plain)


def test_with_cp_is_off_in_eval_and_no_grad(monkeypatch):
    """Without autograd (``torch.no_grad``: mmengine's val / test loops,
    inference, export) the plain forward runs, even in train mode; a
    training forward goes through one checkpoint per Swin block and PWAM."""
    import torch.utils.checkpoint as cp
    from ris_plugins.models.utils import checkpoint as ours
    model, cfg = build(LAVT, {'model.backbone.with_cp': True})
    img, tokens, mask = demo_inputs(cfg)
    calls = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            calls.append(1)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(cp, 'checkpoint', spy(cp.checkpoint))  # Swin
    monkeypatch.setattr(ours, 'checkpoint', spy(ours.checkpoint))  # PWAM
    with torch.no_grad():
        model.train()(img, tokens, mask)
        model.eval()(img, tokens, mask)
    assert not calls
    model.train()(img, tokens, mask)
    blocks = sum(len(stage.blocks) for stage in model.backbone.stages)
    assert len(calls) == blocks + len(model.backbone.pwams)


def pwam_inputs(b=2, n=30, c=16, ct=12, length=7):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, n, c, generator=g, requires_grad=True)
    words = torch.randn(b, length, ct, generator=g, requires_grad=True)
    pad = torch.zeros(b, length, dtype=torch.bool)
    pad[0, 4:] = True  # sample 0: 4 words, 3 padding
    return x, TextFeatures(words, words.mean(1), pad)


@pytest.mark.parametrize('heads', [1, 4])
def test_pwam_sdpa_equals_explicit(heads):
    torch.manual_seed(0)
    explicit = PWAM(16, 12, heads)
    sdpa = copy.deepcopy(explicit)
    sdpa.image_lang_att.use_sdpa = True
    results = []
    for module in (explicit, sdpa):
        x, text = pwam_inputs()
        fused, gated = module(x, text)
        (fused.square().sum() + gated.sum()).backward()
        results.append((fused.detach(), gated.detach(), x.grad,
                        text.word_feats.grad))
    for a, b in zip(*results):
        assert_same(a, b)


def test_pwam_sdpa_is_used_and_runs_under_bf16_autocast():
    module = PixelWordAttention(16, 12, 2, use_sdpa=True)
    x, text = pwam_inputs()
    words = text.word_feats.transpose(1, 2)
    mask = (~text.pad_mask).float().unsqueeze(1)
    import torch.nn.functional as F
    calls = []
    original = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].dtype)
        return original(*args, **kwargs)

    F.scaled_dot_product_attention = spy
    try:
        ref = module(x, words, mask)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = module(x, words, mask)
    finally:
        F.scaled_dot_product_attention = original
    assert calls == [torch.float32, torch.bfloat16]
    # bf16 (8-bit mantissa, unit roundoff 2^-8) through 4 products and two
    # instance norms: a few percent of the output scale.
    assert_same(ref, low.float(), tol=5e-2)


def test_quantization_adapter_ignores_sdpa_switch():
    """A converted (quantizable) PWAM computes through matmul1 / matmul2
    even when built with ``use_sdpa=True``, with the same outputs."""
    torch.manual_seed(0)
    module = PWAM(16, 12, 2, use_sdpa=True)
    x, text = pwam_inputs()
    ref = module(x, text)[0].detach()
    convert_attention(module)
    att = module.image_lang_att
    calls = []
    for mm in (att.matmul1, att.matmul2):
        mm.register_forward_hook(lambda *a: calls.append(1))
    got = module(x, text)[0].detach()
    assert len(calls) == 2
    assert_same(ref, got)


def assert_within_fp32_error(model, switched, cfg, factor: float = 2.0):
    """Eval-mode logits of ``switched`` differ from ``model``'s by at most
    ``factor`` times ``model``'s own float32 error, i.e. its distance to
    the same weights run in float64. A switch that reorders float32
    arithmetic (other kernels, fused attention) changes the output by
    rounding amplified by depth (norm layers); this bound scales with it
    instead of a fixed 1e-5."""
    img, tokens, mask = demo_inputs(cfg)
    with torch.no_grad():
        ref = model.eval()(img, tokens, mask)
        got = switched.eval()(img, tokens, mask)
        exact = copy.deepcopy(model).double()(img.double(), tokens,
                                              mask).float()
    fp32_error = (ref - exact).abs().max().item()
    assert 0 < fp32_error < 1e-3 * ref.abs().max().item()
    assert (got - ref).abs().max().item() <= factor * fp32_error, (
        (got - ref).abs().max().item(), fp32_error)


def test_lavt_pwam_sdpa_same_model_outputs():
    """The whole LAVT model with SDPA in every PWAM."""
    model, cfg = build(LAVT)
    model_sdpa, _ = build(LAVT, {'model.backbone.pwam_sdpa': True})
    assert all(p.image_lang_att.use_sdpa for p in model_sdpa.backbone.pwams)
    assert_within_fp32_error(model, model_sdpa, cfg)


@pytest.mark.parametrize('config', [CRIS, BASELINE], ids=['cris', 'baseline'])
def test_channels_last_same_outputs(config):
    model, cfg = build(config)
    model_cl, _ = build(config)
    to_channels_last(model_cl)
    convs = [
        m.weight for m in model_cl.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    assert convs and all(
        w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert_within_fp32_error(model, model_cl, cfg)
    # and it trains: the same parameters get finite gradients
    _, grads = step(model, cfg)
    _, grads_cl = step(model_cl, cfg)
    assert grads.keys() == grads_cl.keys()
    assert all(torch.isfinite(g).all() for g in grads_cl.values())
