"""CRIS configs: data, optimizer and full-size builds, the demo config on
RefShapes, and the CRIS-LoRA config."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.optim import build_optim_wrapper

from mmseg.registry import DATASETS, MODELS

from ..conftest import (ROOT, n_params, run_samples, tiny_cris, token_samples,
                        tokens)

CRIS_CFG = osp.join(ROOT, 'configs', 'cris')


DEMO_CFG = osp.join(ROOT, 'configs', 'demo',
                    'cris-small_tiny-rn-minilm_1xb16-2k_refshapes-160x160.py')


@pytest.mark.slow
def test_full_size_configs_build_with_clip_sizes():
    """Full CRIS RN50 / RN101 from the configs: the connect residual
    (2,099,200 / 1,049,600) and CLIP (~102.0M / ~119.7M, ris_methods.md
    2.1 and 2.6) around the 42.74M / 40.51M head."""
    expected = {
        'cris_r50_8xb8-50e_refcoco-416x416.py': (2_099_200, 102.0e6),
        'cris_r101_8xb8-50e_refcoco-416x416.py': (1_049_600, 119.7e6),
    }
    for name, (connect, clip) in expected.items():
        model = MODELS.build(Config.fromfile(osp.join(CRIS_CFG, name)).model)
        c = n_params(model.backbone.attnpool.connect)
        clip_params = (n_params(model.backbone) - c +
                       n_params(model.text_encoder))
        assert c == connect
        assert abs(clip_params - clip) < 0.05e6, clip_params


def test_cris_configs_data_and_optimizer():
    from mmengine.optim import build_optim_wrapper
    lengths = {'refcoco': 17, 'refcoco+': 17, 'refcocog-umd': 22}
    for arch in ('r50', 'r101'):
        for ds, length in lengths.items():
            cfg = Config.fromfile(
                osp.join(CRIS_CFG, f'cris_{arch}_8xb8-50e_{ds}-416x416.py'))
            toks = [t for t in cfg.train_dataloader.dataset.pipeline +
                    cfg.test_dataloader.dataset.pipeline
                    if t.type == 'TokenizeText']
            assert {(t.tokenizer, t.context_length) for t in toks} == {
                ('clip', length)}
            assert cfg.model.text_encoder.context_length == length
            assert cfg.test_evaluator.threshold == 0.35
            assert cfg.test_evaluator.pr_op == '>'
            assert cfg.val_dataloader.dataset.split == 'val'
            assert cfg.param_scheduler[0].milestones == [35]
            assert cfg.train_cfg.max_epochs == 50
    cfg = Config.fromfile(
        osp.join(CRIS_CFG, 'cris_r50_8xb8-50e_refcoco-416x416.py'))
    model = tiny_cris()  # same module names as the full model
    optim = dict(cfg.optim_wrapper, type='OptimWrapper')
    optim.pop('loss_scale')
    wrapper = build_optim_wrapper(model, optim)
    names = {id(p): n for n, p in model.named_parameters()}
    lr = {names[id(p)]: g['lr'] for g in wrapper.optimizer.param_groups
          for p in g['params']}
    assert lr['backbone.layer1.0.conv1.weight'] == pytest.approx(1e-5)
    assert lr['text_encoder.clip.text_projection.weight'] == pytest.approx(
        1e-5)
    assert lr['backbone.attnpool.positional_embedding'] == pytest.approx(
        1e-4)
    assert lr['text_encoder.clip.text_model.embeddings.'
              'position_embedding.weight'] == pytest.approx(1e-4)
    assert lr['decode_head.projector.txt.weight'] == pytest.approx(1e-4)
    assert lr['fusion.text_proj.0.weight'] == pytest.approx(1e-4)


def test_demo_config_trains_and_predicts_on_refshapes(refshapes_root):
    cfg = Config.fromfile(DEMO_CFG)
    dataset_cfg = cfg.train_dataloader.dataset
    dataset_cfg.update(data_root=refshapes_root, indices=2)
    dataset = DATASETS.build(dataset_cfg)
    batch = pseudo_collate([dataset[0], dataset[1]])
    assert batch['data_samples'][0].text_tokens.shape == (20, )
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    data = model.data_preprocessor(batch, True)
    assert data['inputs'].shape == (2, 3, 160, 160)
    losses = model(**data, mode='loss')
    assert set(losses) == {
        'decode.loss_ce', 'decode.loss_dice', 'decode.acc_seg'
    }
    (losses['decode.loss_ce'] + losses['decode.loss_dice']).backward()
    connect = model.backbone.attnpool.connect[0].weight
    assert float(connect.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.text_encoder.parameters())
    assert model(**data, mode='tensor').shape == (2, 1, 40, 40)
    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(batch, False),
                      mode='predict')
    ori = batch['data_samples'][0].ori_shape
    assert preds[0].pred_sem_seg.data.shape == (1, *ori)


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
                         token_samples(tokens(5, 8)), mode='loss')
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    loss.backward()
    text_grads = {
        n for n, p in model.text_encoder.named_parameters()
        if p.grad is not None
    }
    # 2 layers x (q_proj, v_proj) x (lora_down, lora_up).
    assert len(text_grads) == 8 and all('.lora_' in n for n in text_grads)
    for prefix in ('backbone.layer1', 'fusion', 'decode_head'):
        grads = [p.grad for n, p in model.named_parameters()
                 if n.startswith(prefix) and p.requires_grad]
        assert grads and all(g is not None and torch.isfinite(g).all()
                             for g in grads), prefix
        assert sum(float(g.abs().sum()) for g in grads) > 0, prefix
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
