"""LoRA wrapper: identity at init, what trains, the math, pattern errors."""
import copy

import pytest
import torch
import torch.nn as nn

from mmseg.registry import MODELS
from ris_plugins.models.adapters.lora import LoRA

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
