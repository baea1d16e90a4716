"""Generic PEFT pieces (LoRA, bottleneck adapter), parameter accounting and
ETRIS's ResNet Bridger (ris_methods.md 3.3) and a LoRA config for
CRIS's text encoder."""
import copy
import logging
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper

from mmseg.registry import MODELS
from ris_plugins.models.adapters.bottleneck import BottleneckAdapter
from ris_plugins.models.adapters.bridger_rn import BridgerRN
from ris_plugins.models.adapters.lora import LoRA
from ris_plugins.utils.param_report import (format_param_table,
                                            log_param_table, param_table)

from ..conftest import ROOT, run_samples
from .test_etris import samples, tokens

TINY_CLIP_TEXT = dict(
    type='RefCLIPTextEncoder',
    context_length=8,
    config=dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        projection_dim=16))
QV = [dict(type=r'.*self_attn\.(q|v)_proj')]
TOKENS = torch.tensor([[49406, 320, 1929, 49407, 0, 0],
                       [49406, 518, 49407, 0, 0, 0]])


def tiny_text_encoder():
    torch.manual_seed(0)
    return MODELS.build(TINY_CLIP_TEXT)


# ---------------------------------------------------------------- LoRA


def test_lora_identity_at_init_and_only_lora_trainable():
    base = tiny_text_encoder().eval()
    lora = MODELS.build(
        dict(
            type='LoRA',
            module=copy.deepcopy(base),
            rank=4,
            alpha=8,
            targets=QV)).eval()
    ref, out = base(TOKENS), lora(TOKENS)
    torch.testing.assert_close(out.word_feats, ref.word_feats)
    torch.testing.assert_close(out.sent_feat, ref.sent_feat)
    trainable = {
        n: p.numel()
        for n, p in lora.named_parameters() if p.requires_grad
    }
    assert all('.lora_' in n for n in trainable)
    # q_proj and v_proj of 1 layer, width 32, rank 4: 2 * (32*4 + 4*32).
    assert sum(trainable.values()) == 512
    assert lora.out_channels == 32  # attributes fall through
    out.word_feats.sum().backward()
    grads = {n for n, p in lora.named_parameters() if p.grad is not None}
    assert grads == set(trainable)


def test_lora_from_config_dict_and_full_state_dict():
    torch.manual_seed(0)
    lora = MODELS.build(
        dict(
            type='LoRA',
            module=TINY_CLIP_TEXT,
            rank=2,
            targets=[dict(type='fc1', rank=3)]))
    layer = lora.module.clip.text_model.encoder.layers[0].mlp.fc1
    assert layer.lora_down.out_features == 3  # per-target rank
    parent = nn.ModuleDict(dict(a=nn.Linear(2, 2), enc=lora))
    keys = parent.state_dict().keys()
    # mmpretrain's LoRAModel hook would drop 'a.*' and the frozen weights.
    assert {'a.weight', 'a.bias'} <= set(keys)
    assert any(k.endswith('fc1.original_layer.weight') for k in keys)
    assert any(k.endswith('fc1.lora_up.weight') for k in keys)


def test_lora_math_on_toy_linear():
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1., 2.]]))
        lin.bias.fill_(0.5)
    lora = LoRA(nn.Sequential(lin), alpha=3, rank=1, targets=[dict(type='0')])
    wrapped = lora.module[0]
    with torch.no_grad():
        wrapped.lora_down.weight.copy_(torch.tensor([[1., -1.]]))
        wrapped.lora_up.weight.fill_(2.)
    x = torch.tensor([[3., 1.]])
    # W0 x + b = 3 + 2 + .5; LoRA: up(down x) * alpha / r = 2 * 2 * 3.
    torch.testing.assert_close(lora(x), torch.tensor([[5.5 + 12.]]))


def test_lora_pattern_errors():
    base = tiny_text_encoder()
    with pytest.raises(
            ValueError, match=r"'.*nothing_here' matches no "
            r'nn.Linear.*q_proj'):
        LoRA(copy.deepcopy(base), targets=QV + [dict(type='.*nothing_here')])
    with pytest.raises(
            ValueError,
            match=r'only non-Linear modules: .*'
            r'self_attn \(CLIP\w*Attention\)'):
        LoRA(copy.deepcopy(base), targets=[dict(type='self_attn')])
    with pytest.raises(ValueError, match='at least one target'):
        LoRA(copy.deepcopy(base), targets=[])
    with pytest.raises(ValueError, match='rank must be >= 1'):
        LoRA(copy.deepcopy(base), rank=0, targets=QV)
    with pytest.raises(ValueError, match='frozen=True'):
        LoRA(dict(TINY_CLIP_TEXT, frozen=True), targets=QV)


# ---------------------------------------------------- bottleneck adapter


def test_bottleneck_identity_at_init_and_grads():
    ada = MODELS.build(
        dict(type='BottleneckAdapter', dim=6, hidden=3, scale=0.5))
    x = torch.randn(2, 4, 6)
    torch.testing.assert_close(ada(x), x)
    assert sum(p.numel() for p in ada.parameters()) == 2 * 6 * 3 + 3 + 6
    ada(x).square().sum().backward()
    assert ada.up.weight.grad.abs().sum() > 0  # up learns first
    assert ada.down.weight.grad.abs().sum() == 0  # blocked by up = 0


def test_bottleneck_hand_values():
    ada = BottleneckAdapter(dim=2, hidden=1, scale=0.5)
    with torch.no_grad():
        ada.down.weight.copy_(torch.tensor([[1., 1.]]))
        ada.down.bias.zero_()
        ada.up.weight.copy_(torch.tensor([[1.], [2.]]))
    # h = relu(1 + 2) = 3; y = x + .5 * (3, 6).
    torch.testing.assert_close(
        ada(torch.tensor([1., 2.])), torch.tensor([2.5, 5.]))
    with pytest.raises(ValueError, match='last dimension 3'):
        ada(torch.zeros(3))


# ---------------------------------------------------- parameter report


class Toy(nn.Module):

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(5))  # 5, trainable
        self.a = nn.Linear(3, 4)  # 16, frozen
        self.b = nn.Linear(4, 2)  # 10, trainable
        self.bn = nn.BatchNorm1d(2)  # 4 params (+ buffers, not counted)
        self.c = nn.Sequential(self.b)  # shared with b: counted once
        self.act = nn.ReLU()  # no params: no row
        self.a.requires_grad_(False)
        self.bn.weight.requires_grad_(False)


def test_param_table_hand_counts():
    rows = param_table(Toy())
    assert rows == [('(self)', 5, 0), ('a', 0, 16), ('b', 10, 0), ('bn', 2, 2),
                    ('total', 17, 18)]


def test_log_param_table(tmp_path):
    log_file = tmp_path / 'params.log'
    logger = MMLogger.get_instance(
        'test_param_report', log_file=str(log_file), log_level='INFO')
    text = log_param_table(Toy(), logger=logger)
    for h in logger.handlers:
        h.flush()
    lines = text.splitlines()
    assert lines[0].split() == [
        'module', 'trainable', 'frozen', 'trainable', '%'
    ]
    assert len({len(line)
                for line in lines[:-1] if set(line) != {'-'}}) == 1  # aligned
    assert lines[-2].split() == ['total', '17', '18', '48.57']
    assert lines[-1] == 'trainable: 17 / 35 parameters (48.571%)'
    assert 'trainable: 17 / 35' in log_file.read_text()
    assert format_param_table([('x', 1_234_567, 0), ('total', 1_234_567, 0)
                               ]).splitlines()[2].split()[1] == '1,234,567'
    logging.getLogger('test_param_report').handlers.clear()


# ------------------------------------------------------------ BridgerRN


def test_bridger_rn_full_size_params():
    br = MODELS.build(dict(type='BridgerRN'))  # RN50 / RN101 widths
    assert sum(p.numel() for p in br.parameters()) == 1_942_080
    per_stage = [sum(p.numel() for p in s.parameters()) for s in br.stages]
    ladder = 2 * 2 * 64  # one LayerNorm pair (v, t) at width 64
    # ris_methods.md 3.3 counts the ladder norms with stages 0 and 1.
    assert [per_stage[0] + ladder, per_stage[1] + ladder,
            per_stage[2]] == [428_992, 297_920, 1_215_168]
    # Interactor by hand: 2 MHA (4 d^2 + 4 d) + FFN 64-128-64 + 3 LN.
    d = 64
    inter = 2 * (4 * d * d + 4 * d) + (d * 128 + 128) + (128 * d + d) + 6 * d
    assert sum(p.numel() for p in br.stages[0].fusion_v.parameters()) == inter


def tiny_bridger(**kw):
    torch.manual_seed(0)
    return BridgerRN(
        visual_dim=(8, 16, 32),
        text_dim=12,
        d_model=8,
        num_heads=2,
        ffn_dim=16,
        **kw).eval()


def tiny_inputs():
    g = torch.Generator().manual_seed(3)
    vis = [
        torch.randn(2, 8, 8, 8, generator=g),
        torch.randn(2, 16, 4, 4, generator=g),
        torch.randn(2, 32, 2, 2, generator=g)
    ]
    txt = torch.randn(2, 5, 12, generator=g)
    pad = torch.tensor([[False] * 3 + [True] * 2, [False] * 4 + [True]])
    return vis, txt, pad


def run_stages(br, vis, txt, pad):
    outs, state = [], None
    for s in range(3):
        v, txt, state = br(s, vis[s], txt, pad, state)
        outs.append(v)
    return outs, txt, state


def test_bridger_rn_shapes_and_ladder():
    br = tiny_bridger()
    vis, txt, pad = tiny_inputs()
    v0, t0, st0 = br(0, vis[0], txt, pad)
    assert v0.shape == vis[0].shape and t0.shape == txt.shape
    assert st0[0].shape == (2, 16, 8) and st0[1].shape == (2, 5, 8)
    v1, t1, st1 = br(1, vis[1], t0, pad, st0)
    # Ladder: the state is LN(zoom_in(v) + previous state).
    z = br.stages[1].zoom_in(vis[1]).flatten(2).transpose(1, 2)
    torch.testing.assert_close(st1[0], br.ladder_v[0](z + st0[0]))
    zt = br.stages[1].txt_in(t0)
    torch.testing.assert_close(st1[1], br.ladder_t[0](zt + st0[1]))
    v2, t2, _ = br(2, vis[2], t1, pad, st1)
    assert v2.shape == (2, 32, 2, 2)


def test_bridger_rn_residual_is_zero_when_zoom_out_is_zero():
    br = tiny_bridger()
    with torch.no_grad():
        for s in br.stages:
            s.zoom_out.weight.zero_()
            s.txt_out.weight.zero_()
            s.txt_out.bias.zero_()
    vis, txt, pad = tiny_inputs()
    outs, t, _ = run_stages(br, vis, txt, pad)
    for o, v in zip(outs, vis):
        torch.testing.assert_close(o, v)
    torch.testing.assert_close(t, txt)


def test_bridger_rn_padding_mask():
    vis, txt, pad = tiny_inputs()
    txt2 = txt.clone()
    txt2[pad] = torch.randn(int(pad.sum()), 12)
    for mask_padding, same in ((True, True), (False, False)):
        br = tiny_bridger(mask_padding=mask_padding)
        with torch.no_grad():
            a, _, _ = run_stages(br, vis, txt, pad)
            b, _, _ = run_stages(br, vis, txt2, pad)
        assert torch.allclose(a[2], b[2], atol=1e-6) == same


def test_bridger_rn_grads_reach_all_params():
    br = tiny_bridger().train()
    vis, txt, pad = tiny_inputs()
    outs, t, _ = run_stages(br, vis, txt, pad)
    (sum(o.square().mean() for o in outs) + t.square().mean()).backward()
    assert all(p.grad is not None for p in br.parameters())


def test_bridger_rn_bad_input():
    br = tiny_bridger()
    vis, txt, pad = tiny_inputs()
    with pytest.raises(ValueError, match=r'stages \[0, 1, 2\], got 3'):
        br(3, vis[2], txt, pad)
    with pytest.raises(ValueError, match=r'expects vision \(B, 16'):
        br(1, vis[0], txt, pad, (None, None))
    with pytest.raises(ValueError, match=r'\(B, L, 12\)'):
        br(0, vis[0], torch.randn(2, 5, 7), pad)
    with pytest.raises(ValueError, match='needs the ladder state'):
        br(1, vis[1], txt, pad)
    with pytest.raises(ValueError, match='multiples of the stage stride'):
        br(0, torch.randn(2, 8, 7, 7), txt, pad)
    with pytest.raises(ValueError, match='one entry per stage'):
        BridgerRN(visual_dim=(8, 16), strides=(2, 1, 2))
    with pytest.raises(ValueError, match="'down' or 'up'"):
        BridgerRN(zoom_modes=('down', 'down', 'sideways'))


# -------------------------------------------- LoRA in CRIS's text encoder
CRIS_LORA_CFG = osp.join(ROOT, 'configs', 'cris',
                         'cris-lora_r50-clip_8xb8-50e_refcoco-416x416.py')


def tiny_cris_lora_cfg() -> Config:
    """The CRIS-LoRA config with its sizes shrunk (tiny CLIP RN w = 8,
    2-layer width-32 CLIP text, narrow neck and head); LoRA as shipped."""
    cfg = Config.fromfile(CRIS_LORA_CFG)
    m = cfg.model
    m.data_preprocessor.size = None
    m.backbone.update(base_channels=8, stage_blocks=(1, 1, 1, 1),
                      num_attn_heads=2, output_dim=16)
    m.text_encoder.module.update(
        context_length=8,
        config=dict(hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=2,
                    projection_dim=16))
    m.fusion.update(in_channels=[64, 128, 16], out_channels=[16, 32, 64],
                    text_channels=16)
    m.decode_head.update(in_channels=32, channels=16, sent_channels=16,
                         text_channels=32, num_layers=1, num_heads=2,
                         ffn_channels=64)
    return cfg


def test_cris_lora_config_wraps_the_text_encoder():
    cfg = Config.fromfile(CRIS_LORA_CFG)
    te = cfg.model.text_encoder
    assert te.type == 'LoRA' and te.module.type == 'RefCLIPTextEncoder'
    assert (te.rank, te.alpha) == (8, 16)
    assert cfg.model.backbone.type == 'CLIPResNet'  # the rest is CRIS
    # Full size: 12 layers x (q, v) x (512 x 8 + 8 x 512) LoRA weights.
    with torch.device('meta'):
        text = MODELS.build(te)
    lora = sum(p.numel() for p in text.parameters() if p.requires_grad)
    assert lora == 12 * 2 * (512 * 8 + 8 * 512) == 196_608
    # Frozen CLIP text tower by hand: tokens 49408 x 512, positions 77 x
    # 512, 12 x (4 Linear 512^2 + 2 MLP 512 x 2048 + biases + 2 LN), final
    # LN, text_projection 512 x 1024 (no bias).
    layer = 4 * (512 * 512 + 512) + 2 * 512 * 2048 + 2048 + 512 + 4 * 512
    tower = 49408 * 512 + 77 * 512 + 12 * layer + 2 * 512 + 512 * 1024
    assert sum(p.numel() for p in text.parameters()) == tower + lora
    assert all('.lora_' in n for n, p in text.named_parameters()
               if p.requires_grad)


def test_tiny_cris_lora_trains_only_lora_in_the_text_encoder():
    cfg = tiny_cris_lora_cfg()
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    losses = run_samples(model, torch.randn(2, 3, 64, 64),
                         samples(tokens(5, 8)), mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    loss.backward()
    text_grads = {
        n for n, p in model.text_encoder.named_parameters()
        if p.grad is not None
    }
    # 2 layers x (q_proj, v_proj) x (lora_down, lora_up).
    assert len(text_grads) == 8 and all('.lora_' in n for n in text_grads)
    assert all(p.grad is not None for n, p in model.named_parameters()
               if n.startswith(('backbone.layer1', 'fusion', 'decode_head'))
               and p.requires_grad)
    # Optimizer from the config's paramwise_cfg (plain OptimWrapper on
    # CPU): LoRA at the base lr, the CLIP visual tower at 0.1x.
    optim_cfg = copy.deepcopy(cfg.optim_wrapper)
    optim_cfg.type = 'OptimWrapper'
    optim_cfg.pop('loss_scale')
    wrapper = build_optim_wrapper(model, optim_cfg)
    lrs = {id(p): g['lr'] for g in wrapper.optimizer.param_groups
           for p in g['params']}
    lora_up = model.text_encoder.module.clip.text_model.encoder.layers[
        0].self_attn.q_proj.lora_up.weight
    frozen_q = model.text_encoder.module.clip.text_model.encoder.layers[
        0].self_attn.q_proj.original_layer.weight
    assert lrs[id(lora_up)] == pytest.approx(1e-4)
    assert lrs[id(model.backbone.conv1.weight)] == pytest.approx(1e-5)
    before = frozen_q.detach().clone()
    assert float(lora_up.detach().abs().sum()) == 0  # identity at init
    wrapper.step()
    assert float(lora_up.detach().abs().sum()) > 0
    assert torch.equal(frozen_q, before)
