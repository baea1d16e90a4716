"""BarLeRIa: SNF shortcut flows, LIM prompts (both directions), the GST
side network wired through DualEncoderBackbone + HANeck, both variants
forward / backward, and the full-size parameter counts."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.models import SNF, LIMPrompts, ShortcutFlow

from ..conftest import ROOT, run_samples, text_of
from .test_etris import (TINY_TEXT, n_params, samples,
                         tiny_backbone, tiny_segmentor, tokens)

PROJECT = osp.join(ROOT, 'projects', 'barleria', 'configs')
NO_GST_CFG = osp.join(PROJECT,
                      'barleria-no-gst_vit-b16_8xb4-50e_refcoco-416x416.py')
FULL_CFG = osp.join(ROOT, 'configs', 'barleria',
                    'barleria_vit-b16_8xb4-50e_refcoco-416x416.py')
TINY_SNF = dict(type='SNF', visual_dim=32, text_dim=24, visual_layers=4,
                text_layers=4, flow_length=4)
TINY_LIM = dict(type='LIMPrompts', visual_dim=32, text_dim=24, hidden_dim=8,
                text_to_vision=True, vision_to_text=True)
TINY_GST = dict(type='GSTSideNet', visual_dim=32, text_dim=24, width=12,
                depth=2, num_heads=3, num_queries=4,
                fusion_map=((1, 0), (2, 1), (3, 2)), grid=4, out_dim=16)
LIM_HOOK = dict(after=(0, 0), module=TINY_LIM)
POS = ('pos_embed', 'position_embedding.weight')


# ------------------------------------------------------------------ SNF
def test_planar_flow_by_hand():
    flow = ShortcutFlow(3, flow_length=1)
    step = flow.steps[0]
    with torch.no_grad():
        flow.mu.copy_(torch.tensor([0.5, 0., -1.]))
        flow.log_sigma.copy_(torch.tensor([0., math.log(2.), 0.]))
        step.u.copy_(torch.tensor([1., 2., 3.]))
        step.w.copy_(torch.tensor([0.5, -1., 0.25]))
        step.b.fill_(0.1)
    z = torch.tensor([[2., 1., 4.]])
    z0 = [0.5 + 2., 2. * 1., -1. + 4.]  # affine: (2.5, 2, 3)
    a = math.tanh(0.5 * 2.5 - 1. * 2. + 0.25 * 3. + 0.1)  # tanh(0.1)
    want = torch.tensor([[z0[0] + a, z0[1] + 2 * a, z0[2] + 3 * a]])
    torch.testing.assert_close(flow(z), want)


def test_snf_identity_at_init():
    torch.manual_seed(0)
    flow = ShortcutFlow(64, flow_length=4)
    x = torch.randn(3, 10, 64) * 5
    # Near identity: |u| <= 0.01 and |tanh| <= 1, 4 steps.
    assert float((flow(x) - x).abs().max()) <= 4 * 0.01
    assert float((flow(x) - x).abs().max()) > 0
    for step in flow.steps:
        nn.init.zeros_(step.u)
    assert torch.equal(flow(x), x)  # exactly identity with u = 0


def test_snf_parameter_count_and_checks():
    snf = SNF()  # ViT-B/16 768 x 12 + text 512 x 12, K = 4
    assert n_params(snf) == 24 * (2 * 768 + 4 * (2 * 768 + 1)) + 24 * (
        2 * 512 + 4 * (2 * 512 + 1))
    assert n_params(snf) == 307_392  # ris_methods.md 4.1
    with pytest.raises(ValueError, match='visual_layers=4 but the visual '
                       'tower has 12 blocks'):
        SNF(visual_layers=4).check_towers(12, 768, 12, 512)
    with pytest.raises(ValueError, match='text_dim=512 but the text tower '
                       'is 24 wide'):
        SNF().check_towers(12, 768, 12, 24)
    with pytest.raises(ValueError, match='valid'):
        SNF().shortcuts('audio', 0)


def test_runner_with_identity_snf_equals_plain_runner():
    """With u = 0 the flows are the identity, so the re-expressed blocks
    (flows around the library blocks' submodules) must equal the plain
    library blocks."""
    plain = tiny_backbone(interactions=[], visual_taps=(2, )).eval()
    snf = tiny_backbone(interactions=[], visual_taps=(2, ),
                        shortcuts=TINY_SNF).eval()
    snf.load_state_dict(plain.state_dict(), strict=False)
    for name, p in snf.shortcut_module.named_parameters():
        if name.endswith('.u'):
            nn.init.zeros_(p)
    img, tok = torch.randn(2, 3, 64, 64), tokens(5, 8)
    with torch.no_grad():
        a, b = plain(img, tok), snf(img, tok)
    for x, y in zip(a.visual, b.visual):
        torch.testing.assert_close(x, y)
    torch.testing.assert_close(a.text.word_feats, b.text.word_feats)
    # Switched on, the flows change the outputs.
    nn.init.constant_(snf.shortcut_module.visual[0][0].mu, 0.5)
    with torch.no_grad():
        c = snf(img, tok)
    assert not torch.allclose(a.visual[-1], c.visual[-1])
    with pytest.raises(ValueError, match='text_dim=24 but the text tower'):
        tiny_backbone(interactions=[],
                      shortcuts=dict(TINY_SNF, text_dim=24,
                                     visual_dim=32, text_layers=4),
                      text=dict(TINY_TEXT, config=dict(
                          TINY_TEXT['config'], hidden_size=16)))


# ------------------------------------------------------------------ LIM
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
    bb = tiny_backbone(interactions=[dict(after=(0, 0), module=lim)],
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
    bb = tiny_backbone(interactions=[LIM_HOOK], visual_taps=(2, )).eval()
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


# ------------------------------------------------------- full BarLeRIa
def _barleria(side: bool):
    bb = dict(interactions=[LIM_HOOK], shortcuts=TINY_SNF)
    if side:
        bb['side_net'] = TINY_GST
    return tiny_segmentor(bb, extra_input=side)


@pytest.mark.parametrize('side', [False, True], ids=['no-gst', 'full'])
def test_barleria_variants_forward_backward(side):
    model = _barleria(side).train()
    img, ds = torch.randn(2, 3, 64, 64), samples(tokens(5, 8))
    losses = run_samples(model, img, ds, mode='loss')
    want = {'decode.loss_ce', 'decode.acc_seg'}
    if side:
        want.add('backbone.loss_side')
    assert set(losses) == want
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    for name, p in model.named_parameters():
        if name.startswith(('backbone.visual', 'backbone.text')):
            if name.endswith(POS):
                assert p.grad is not None, name
            else:
                assert not p.requires_grad and p.grad is None, name
    adapters = [model.backbone.shortcut_module, model.backbone.interactions]
    for module in adapters:
        for name, p in module.named_parameters():
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, \
                name
    if side:
        side_net = model.backbone.side_net
        assert side_net.out_proj.weight.grad is not None
    model.eval()
    with torch.no_grad():
        pred = run_samples(model, img, samples(tokens(5, 8)), mode='predict')
    assert pred[0].pred_sem_seg.data.shape == (1, 64, 64)


def test_side_output_is_added_to_the_neck_output():
    model = _barleria(True).eval()
    img, ds = torch.randn(2, 3, 64, 64), samples(tokens(5, 8))
    with torch.no_grad():
        (x, ), _ = model.extract_feat(img, *text_of(ds))
        out = model.backbone(img, tokens(5, 8))
        model.fusion.extra_input = False
        (base, ), _ = model.fusion(out.visual[:3], out.text)
    assert out.visual[3].shape == base.shape == (2, 16, 4, 4)
    torch.testing.assert_close(x, base + out.visual[3])


# -------------------------------------------------------------- configs
def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_barleria_no_gst_full_size_parameters():
    """SNF 307,392 + LIM 41,760 + 41,504 = 390,656 (the paper's 0.39M),
    plus the positional embeddings and ETRIS's head."""
    cfg = Config.fromfile(NO_GST_CFG)
    with torch.device('meta'):
        model = MODELS.build(cfg.model)
    bb = model.backbone
    adapters = n_params(bb.shortcut_module) + n_params(bb.interactions)
    assert adapters == 307_392 + 41_760 + 41_504 == 390_656
    assert bb.side_net is None
    assert _trainable(model) == 390_656 + 677 * 768 + 77 * 512 + 22_671_361


def test_barleria_full_size_parameters():
    """Full BarLeRIa: + the GST side network as released (3,126,848)."""
    cfg = Config.fromfile(FULL_CFG)
    model = MODELS.build(cfg.model)  # CPU: GSTSideNet cannot init on meta
    bb = model.backbone
    assert n_params(bb.side_net) == 3_126_848  # ris_methods.md 4.3
    assert bb.side_taps == (1, 4, 7, 10)
    assert _trainable(model) == (390_656 + 3_126_848 + 677 * 768 +
                                 77 * 512 + 22_671_361)


@pytest.mark.parametrize('batch_axis', [False, True])
def test_prediction_does_not_depend_on_batch_composition(batch_axis):
    """Fixed global prior: a sample's logits alone equal its logits in a
    batch; the released batch-axis normalisation breaks this."""
    model = tiny_segmentor(
        dict(interactions=[LIM_HOOK], shortcuts=TINY_SNF,
             side_net=dict(TINY_GST, batch_axis_prior=batch_axis)),
        extra_input=True).eval()
    img, tok = torch.randn(3, 3, 64, 64), tokens(5, 8, 6)
    with torch.no_grad():
        batch = model(img, *text_of(samples(tok)))
        alone = model(img[:1], *text_of(samples(tok[:1])))
    same = torch.allclose(batch[:1], alone, atol=1e-5, rtol=1e-4)
    assert same != batch_axis
