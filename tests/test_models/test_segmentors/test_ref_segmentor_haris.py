"""RefSegmentor with HARIS's modules: what trains, and every ablation flag
trains and predicts."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from ris_plugins.utils.synthetic import input_size, tokenize

from ...conftest import (EOT, ROOT, SOT, TINY_SAM, SDPASpy,
                         assert_gradient_matches_finite_difference,
                         assert_same_run)
from ...conftest import forward_backward as run
from ...conftest import run_samples, summed_loss, switched

DEMO_CFG = osp.join(ROOT, 'configs', 'demo',
                    'haris-small_tiny-sam-clip_1xb16-2k_refshapes-160x160.py')


C_W, C_S, D = 24, 20, 16  # word, sentence, HLA widths


def clip_samples(batch, size=32, lengths=(5, 7), total=8, seed=0):
    """Samples with CLIP ids (SOT, words, EOT, zero padding) and masks."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(batch):
        n = lengths[b % len(lengths)]
        tok = torch.zeros(total, dtype=torch.long)
        tok[0], tok[n - 1] = SOT, EOT
        tok[1:n - 1] = torch.randint(300, 3000, (n - 2, ), generator=g)
        ds = SegDataSample(metainfo=dict(
            text_tokens=tok, text_mask=(tok != 0).long(),
            ori_shape=(size, size), img_shape=(size, size),
            pad_shape=(size, size), img_padding_size=(0, 0, 0, 0)))
        ds.gt_sem_seg = PixelData(
            data=torch.randint(0, 2, (1, size, size), generator=g))
        out.append(ds)
    return out


def tiny_haris(**flags):
    """The demo config shrunk further; ``flags`` go to fusion.hla_cfg,
    fusion or decode_head, wherever the key belongs."""
    cfg = Config.fromfile(DEMO_CFG).model
    cfg.backbone.update(arch=dict(TINY_SAM), img_size=32, patch_size=8,
                        window_size=2, out_indices=(1, 2, 3),
                        out_channels=8)
    cfg.text_encoder.update(config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, projection_dim=C_S), context_length=8)
    cfg.fusion.update(in_channels=[32, 32, 32], text_channels=32,
                      sent_channels=C_S, embed_dims=D)
    cfg.decode_head.update(in_channels=D, channels=8, num_heads=2,
                           ffn_channels=32)
    for key, value in flags.items():
        if key in ('use_hierarchy', 'kernel_size', 'stride', 'word_flow'):
            cfg.fusion[key] = value
        elif key == 'decoder_replaced':
            cfg.decode_head[key] = value
        else:
            cfg.fusion.hla_cfg[key] = value
    torch.manual_seed(0)
    return MODELS.build(cfg)


def test_gradients_reach_only_fusion_and_head():
    model = tiny_haris()
    model.train()
    assert not model.backbone.training
    assert not model.text_encoder.clip.training
    img, ds = torch.randn(2, 3, 32, 32), clip_samples(2)
    losses = run_samples(model, img, ds, mode='loss')
    assert set(losses) == {'decode.loss_focal', 'decode.loss_dice',
                           'decode.acc_seg'}
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    for name, p in model.named_parameters():
        trainable = name.startswith(('fusion.', 'decode_head.'))
        assert p.requires_grad == trainable, name
        if trainable:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name  # frozen: not even a zero tensor
    for part in (model.fusion, model.decode_head):
        assert sum(float(p.grad.abs().sum()) for p in part.parameters()) > 0
    # The gradient is the loss's own: a finite difference along it, in
    # float64, gives its norm.
    model.double()
    assert_gradient_matches_finite_difference(
        lambda: summed_loss(model, img.double(), ds),
        [p for p in model.parameters() if p.requires_grad])
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_parts = sum(p.numel() for m in (model.fusion, model.decode_head)
                  for p in m.parameters())
    assert n_train == n_parts


ABLATIONS = [
    dict(use_feedback=False), dict(use_vw=False), dict(use_lw=False),
    dict(replace_with_cross_attn=True, num_heads=2),
    dict(use_hierarchy=False), dict(decoder_replaced=True),
    dict(feedback_at='attention', feedback_mode='gate'),
    dict(feedback_mode='gate'), dict(stride=2, kernel_size=1),
]


@pytest.mark.parametrize('flags', ABLATIONS, ids=lambda f: ','.join(f))
def test_each_ablation_builds_trains_and_predicts(flags):
    model = tiny_haris(**flags)
    img, ds = torch.randn(2, 3, 32, 32), clip_samples(2)
    losses = run_samples(model, img, ds, mode='loss')
    loss = losses['decode.loss_focal'] + losses['decode.loss_dice']
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(('backbone.', 'text_encoder.')):
            assert p.grad is None, name
    head = [p for p in model.decode_head.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in head)
    unused = [n for n, p in model.named_parameters()
              if p.requires_grad and p.grad is None]
    assert not unused, unused
    # Every head parameter is used (autograd.grad raises otherwise) and
    # the head's gradient agrees with a finite difference (float64).
    model.double()
    assert_gradient_matches_finite_difference(
        lambda: summed_loss(model, img.double(), ds), head)
    model.float()
    model.eval()
    with torch.no_grad():
        pred = run_samples(model, torch.randn(1, 3, 32, 32),
                           clip_samples(1), mode='predict')
    assert pred[0].pred_sem_seg.data.shape == (1, 32, 32)


# flags -> HLA blocks that keep their VWA (the head reads no words; with
# word_flow='chain' levels 1 and 2 feed the next level's words)
DECODER_REPLACED = {
    'mean': (dict(), []),
    'chain': (dict(word_flow='chain'), [0, 1]),
    'sdpa': (dict(use_sdpa=True), []),
}


@pytest.mark.parametrize('case', sorted(DECODER_REPLACED))
def test_decoder_replaced_gives_every_trainable_parameter_a_gradient(case):
    """With decoder_replaced the head reads no words: the fusion's
    word-only branch (VWA of each block whose words nothing reads) is not
    kept, so every trainable parameter gets a gradient (DDP without
    find_unused_parameters)."""
    flags, kept = DECODER_REPLACED[case]
    model = tiny_haris(decoder_replaced=True, **flags)
    losses = run_samples(model, torch.randn(2, 3, 32, 32), clip_samples(2),
                         mode='loss')
    (losses['decode.loss_focal'] + losses['decode.loss_dice']).backward()
    unused = [n for n, p in model.named_parameters()
              if p.requires_grad and p.grad is None]
    assert not unused, unused
    vwa = sorted({int(k.split('.')[2]) for k in model.state_dict()
                  if k.startswith('fusion.blocks.') and '.vw_' in k})
    assert vwa == kept
    # The query head keeps the whole fusion.
    full = tiny_haris(**flags).state_dict()
    assert {k for k in full if '.vw_' in k or '.w_norm.' in k} == {
        f'fusion.blocks.{i}.{m}.{p}' for i in range(3)
        for m in ('vw_value', 'vw_out', 'w_norm') for p in ('weight', 'bias')}


def test_decoder_replaced_without_lw_is_refused():
    """Without LWA the blocks read the text only through their words;
    with a head that reads no words the model would ignore the sentence."""
    with pytest.raises(ValueError, match=r'use_lw=False.*decoder_replaced'):
        tiny_haris(decoder_replaced=True, use_lw=False)


# ------------------------------------------------- use_sdpa switch
# (moved from tests/test_models/test_sdpa_switches.py)
HARIS_DEMO = DEMO_CFG


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
