"""``with_cp`` (activation checkpointing) of our decode heads: LAVT's
top-down decoder (``LAVTHead``, per fusion level) and the CRIS / ETRIS
vision-language decoder (``VLTransformerDecoder`` / ``CRISHead``, per
layer). Outputs, input and parameter gradients equal the plain forward's
(1e-5), BatchNorm running statistics are updated once per step (not twice
by the recomputation), a spy proves the checkpoint runs in training and
not without autograd, and fewer activations are kept for backward.
The backbones' ``with_cp`` is tested in ``test_speed_switches.py``.
"""
import copy
import os.path as osp
from typing import Callable, Dict, List, Tuple

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.models.heads import LAVTHead, VLTransformerDecoder
from ris_plugins.models.utils import checkpoint as ckpt
from ris_plugins.utils.synthetic import input_size, tokenize

from ..conftest import ROOT

LAVT_DEMO = osp.join(ROOT, 'configs', 'demo',
                     'lavt-small_swin-32-minilm_1xb16-1500i_refshapes-'
                     '160x160.py')
WIDTHS = [4, 8, 16, 32]  # F_1..F_4 of the tiny LAVTHead


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5):
    """Max abs difference <= tol * (1 + max |a|) (float32 rounding)."""
    scale = 1 + a.abs().max().item()
    err = (a - b).abs().max().item()
    assert err <= tol * scale, (err, scale)


def leaf(*shape, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_()


Result = Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]


def step(module: nn.Module, inputs: Callable[[], Tuple],
         forward: Callable, seed: int = 0) -> Result:
    """Seeded training forward on fresh leaf inputs and backward of a fixed
    function of the output; returns [output, input grads...] and
    {parameter name: grad}."""
    module.train().zero_grad()
    args = inputs()
    torch.manual_seed(seed)
    out = forward(module, *args)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    tensors = [out.detach()] + [
        a.grad for a in args if isinstance(a, torch.Tensor) and a.requires_grad
    ]
    grads = {n: p.grad.clone() for n, p in module.named_parameters()
             if p.grad is not None}
    return tensors, grads


def assert_same_step(ref: Result, got: Result) -> None:
    (outs_a, grads_a), (outs_b, grads_b) = ref, got
    assert len(outs_a) == len(outs_b) > 1
    for a, b in zip(outs_a, outs_b):
        assert_close(a, b)
    assert grads_a and grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert_close(grads_a[name], grads_b[name])


def with_cp_copy(module: nn.Module) -> nn.Module:
    """A deep copy (same weights and buffers) with every ``with_cp`` flag
    in it set."""
    other = copy.deepcopy(module)
    flags = [m for m in other.modules() if hasattr(m, 'with_cp')]
    assert flags, 'no with_cp switch in the module'
    for m in flags:
        m.with_cp = True
    return other


@pytest.fixture
def checkpoint_calls(monkeypatch) -> List[int]:
    """Counts the checkpoints our ``maybe_checkpoint`` starts."""
    calls = []
    original = ckpt.checkpoint

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(ckpt, 'checkpoint', spy)
    return calls


def saved_bytes(module: nn.Module, inputs: Callable[[], Tuple],
                forward: Callable) -> int:
    """Bytes of the non-parameter tensors autograd keeps for backward in one
    training forward (a non-reentrant checkpoint keeps only its inputs;
    what it packs is not seen by this outer hook)."""
    total = [0]

    def pack(t):
        if not isinstance(t, nn.Parameter):
            total[0] += t.numel() * t.element_size()
        return t

    args = inputs()
    module.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward(module, *args)
    return total[0]


# -------------------------------------------------------------- LAVTHead
def lavt_head() -> LAVTHead:
    torch.manual_seed(0)
    head = LAVTHead(WIDTHS, 8, num_classes=2)
    for m in head.modules():  # non-trivial running statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    return head


def lavt_inputs():
    return tuple(
        leaf(2, c, 32 // 2**i, 24 // 2**i, seed=i)
        for i, c in enumerate(WIDTHS))


def lavt_forward(head, *feats):
    return head(feats)


def norm_stats(module: nn.Module) -> Dict[str, torch.Tensor]:
    return {n: b.clone() for n, b in module.named_buffers()
            if 'running' in n or 'num_batches' in n}


def test_lavt_head_with_cp_same_outputs_grads_and_bn_stats(
        checkpoint_calls):
    head = lavt_head()
    assert head.with_cp is False
    ref = step(head, lavt_inputs, lavt_forward)
    assert not checkpoint_calls
    head_cp = with_cp_copy(lavt_head())
    got = step(head_cp, lavt_inputs, lavt_forward)
    assert len(checkpoint_calls) == 3  # one per fusion level
    assert_same_step(ref, got)
    # Running statistics updated once, as without checkpointing (the
    # recomputation in backward would update them a second time).
    stats, stats_cp = norm_stats(head), norm_stats(head_cp)
    assert stats.keys() == stats_cp.keys() and len(stats) == 3 * 2 * 3
    assert all(stats[k].ne(norm_stats(lavt_head())[k]).any() for k in stats)
    for name in stats:
        assert torch.equal(stats[name], stats_cp[name]), name


def test_lavt_head_with_cp_off_without_autograd(checkpoint_calls):
    head = with_cp_copy(lavt_head())
    with torch.no_grad():
        head.train()(lavt_inputs())
        head.eval()(lavt_inputs())
    assert not checkpoint_calls


def test_lavt_head_with_cp_keeps_fewer_activations():
    plain = saved_bytes(lavt_head(), lavt_inputs, lavt_forward)
    kept = saved_bytes(with_cp_copy(lavt_head()), lavt_inputs, lavt_forward)
    assert kept < 0.5 * plain, (kept, plain)


def test_lavt_demo_model_decoder_with_cp():
    """The LAVT demo model with ``model.decode_head.with_cp=True``: the
    same logits and gradients in training mode (drop path, BN batch
    statistics) as the default."""
    cfg = Config.fromfile(LAVT_DEMO)
    cfg.merge_from_dict({'model.decode_head.with_cp': True})
    assert MODELS.build(cfg.model).decode_head.with_cp
    cfg.merge_from_dict({'model.decode_head.with_cp': False})
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model_cp = copy.deepcopy(model)
    model_cp.decode_head.with_cp = True
    g = torch.Generator().manual_seed(0)
    img = torch.randn(2, 3, *input_size(cfg), generator=g)
    texts = [tokenize(cfg, s) for s in ('the red circle',
                                        'the big blue square on the left')]
    tokens = torch.stack([t['text_tokens'] for t in texts])
    mask = torch.stack([t['text_mask'] for t in texts])

    def forward(m, img):
        return m(img, tokens, mask)

    img_leaf = lambda: (img.clone().requires_grad_(), )  # noqa: E731
    assert_same_step(step(model, img_leaf, forward),
                     step(model_cp, img_leaf, forward))


# ------------------------------------------------ CRIS / ETRIS decoder
def vl_decoder() -> VLTransformerDecoder:
    torch.manual_seed(0)
    return VLTransformerDecoder(2, 16, 2, 32, dropout=0.1, text_dim=24)


def vl_inputs():
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[0, 3:] = True  # sample 0: 3 words, 3 padding
    return leaf(2, 16, 4, 5, seed=1), leaf(2, 6, 24, seed=2), pad


def vl_forward(decoder, vis, words, pad):
    return decoder(vis, words, pad)


def test_vl_decoder_with_cp_same_outputs_and_grads_with_dropout(
        checkpoint_calls):
    """Training mode with dropout 0.1: the recomputation replays the same
    dropout masks, so outputs and gradients are unchanged."""
    decoder = vl_decoder()
    assert decoder.with_cp is False
    ref = step(decoder, vl_inputs, vl_forward)
    assert not checkpoint_calls
    got = step(with_cp_copy(vl_decoder()), vl_inputs, vl_forward)
    assert len(checkpoint_calls) == 2  # one per layer
    assert_same_step(ref, got)
    # and the dropout is really on: another seed changes the output
    other = step(decoder, vl_inputs, vl_forward, seed=1)
    assert not torch.allclose(ref[0][0], other[0][0])


def test_vl_decoder_with_cp_keeps_fewer_activations(checkpoint_calls):
    plain = saved_bytes(vl_decoder(), vl_inputs, vl_forward)
    kept = saved_bytes(with_cp_copy(vl_decoder()), vl_inputs, vl_forward)
    assert kept < 0.5 * plain, (kept, plain)
    with torch.no_grad():
        with_cp_copy(vl_decoder()).train()(*vl_inputs())
    assert len(checkpoint_calls) == 2  # the training forward only


def test_cris_head_with_cp_from_config():
    head = MODELS.build(
        dict(type='CRISHead', in_channels=16, channels=8, sent_channels=20,
             text_channels=24, num_layers=2, num_heads=2, ffn_channels=32,
             num_classes=2, out_channels=1, with_cp=True))
    assert head.decoder.with_cp is True
