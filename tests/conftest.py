"""Shared fixtures and helpers of the test suite.

Data: a small generated RefShapes (``refshapes_root``), data samples with
BERT-style (``samples``) or given CLIP token ids (``tokens``,
``token_samples``), text features (``text``, ``cris_text``,
``text_feats``). Models: the tiny baseline (``tiny_model``, ``tiny_cfg``,
``tiny_model_cfg``), tiny LAVT / CRIS / ETRIS models and the
DualEncoderBackbone (``tiny_lavt``, ``tiny_cris``, ``tiny_etris``,
``tiny_etris_rn``, ``tiny_dual_encoder``), name-seeded weights and the
demo inputs (``name_seeded_``, ``demo_inputs``). Tools: ``load_tool``,
``run_mim``, the CRIS train.py checkpoint writer (``train_py_file``) and
the quantization test config (``qcfg``, ``batch``, ``run``,
``calibrate_on``, ``MINMAX``), visualization masks and samples (``rect``,
``sample``).
Test modules import helpers from here, never from each other.
"""
import copy
import importlib.util
import os
import os.path as osp
import subprocess
import sys
import zlib
from typing import Callable, Dict, List, Tuple

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import ris_plugins  # noqa: F401  (registers the plugin's modules)

register_all_modules(init_default_scope=True)

if os.environ.get('PYTEST_XDIST_WORKER'):
    # pytest-xdist runs one worker per core: one compute thread each (and
    # in the subprocesses they start), or the workers' thread pools fight
    # for the cores and small ops slow down by orders of magnitude.
    torch.set_num_threads(1)
    os.environ['OMP_NUM_THREADS'] = '1'

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
DEMO_CFG = osp.join(
    ROOT, 'configs', 'demo',
    'ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py')


def load_tool(relpath: str):
    """Import a script under tools/ (e.g. 'model_converters/lavt_to_ris.py')
    as a module."""
    path = osp.join(ROOT, 'tools', relpath)
    name = osp.splitext(osp.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def text_of(data_samples) -> tuple:
    """(tokens, text_mask) (B, L) int64 stacked from data samples, as
    RefDataPreProcessor does."""
    from ris_plugins.models.data_preprocessors.ref_data_preprocessor import \
        stack_text
    return tuple(stack_text(data_samples, key, 'cpu')
                 for key in ('text_tokens', 'text_mask'))


def run_samples(model, inputs, data_samples, mode: str):
    """``model`` in ``mode`` on images and the text of ``data_samples``."""
    return model(inputs, *text_of(data_samples), data_samples, mode=mode)


@pytest.fixture(scope='session')
def make_refshapes():
    return load_tool('dataset_converters/make_refshapes.py')


@pytest.fixture(scope='session')
def refshapes_root(tmp_path_factory, make_refshapes):
    """A 40-image RefShapes (all four splits non-empty)."""
    root = str(tmp_path_factory.mktemp('refshapes') / 'refshapes')
    make_refshapes.generate(root, num_images=40, seed=0)
    return root


TINY_BERT = dict(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64)


def run_cfg(config: str, data_root: str, work_dir: str, max_iters: int,
            batch_size: int = 4, size: int = None):
    """A demo config set up for a short in-test run: no workers, constant
    LR, 8 val/test samples, optional input ``size`` (pixels)."""
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    cfg.work_dir = work_dir
    if size:
        cfg.model.data_preprocessor.size = (size, size)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dl = cfg[loader]
        dl.num_workers = 0
        dl.persistent_workers = False
        dl.batch_size = batch_size
        dl.dataset.data_root = data_root
        for t in dl.dataset.pipeline:
            if t.type == 'Letterbox' and size:
                t.scale = (size, size)
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = max_iters
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0)]
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = max_iters
    cfg.val_dataloader.dataset.indices = 8
    cfg.test_dataloader.dataset.indices = 8
    return cfg


def tiny_cfg(data_root: str, work_dir: str, max_iters: int = 4):
    """The baseline demo config shrunk to a tiny random model and 64x64
    inputs."""
    cfg = run_cfg(DEMO_CFG, data_root, work_dir, max_iters, size=64)
    cfg.model.backbone.update(base_channels=8, stem_channels=8)
    cfg.model.text_encoder = dict(
        type='BertTextEncoder', config=TINY_BERT, sentence_pooling='mean')
    cfg.model.text_cache_size = 0  # the tiny BERT trains: nothing to cache
    cfg.model.fusion.update(
        in_channels=[8, 16, 32, 64], channels=16, text_channels=32)
    cfg.model.decode_head.update(in_channels=[16] * 4, channels=16)
    return cfg


@pytest.fixture
def tiny_model_cfg(tmp_path):
    """The tiny baseline of ``tiny_cfg`` (ResNet 8-channel stem, 1-layer
    BERT, 64x64); only its model and tokenizer are used (no data)."""
    return tiny_cfg(str(tmp_path / 'no_data'), str(tmp_path / 'work'))


def run_mim(*args, cwd):
    """``mim *args`` in a subprocess (cwd ``cwd``, the repository on
    PYTHONPATH); asserts exit status 0 and returns stdout + stderr."""
    mim = osp.join(osp.dirname(sys.executable), 'mim')
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([mim, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


# ------------------------------------------------------ data and text
SOT, EOT = 49406, 49407  # CLIP start / end of text


def samples(batch, size=64, ori=(50, 100), pad=(0, 0, 18, 18), seed=0,
            length=8):
    """Data samples with random BERT-style tokens (2 padding positions)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batch):
        tokens = torch.randint(1000, 2000, (length, ), generator=g)
        tokens[0], tokens[length - 2:] = 101, 0
        ds = SegDataSample(metainfo=dict(
            text_tokens=tokens, text_mask=(tokens != 0).long(),
            ori_shape=ori, img_shape=(size, size), pad_shape=(size, size),
            img_padding_size=pad))
        ds.gt_sem_seg = PixelData(
            data=torch.randint(0, 2, (1, size, size), generator=g))
        out.append(ds)
    return out


def tokens(*lengths, total=8):
    """(B, total) CLIP ids: SOT, (n - 2) words, EOT, zero padding."""
    out = torch.zeros(len(lengths), total, dtype=torch.long)
    for b, n in enumerate(lengths):
        out[b, 0] = SOT
        out[b, 1:n - 1] = torch.arange(n - 2) * 97 + 300 + b
        out[b, n - 1] = EOT
    return out


def token_samples(tok, size=64, ori=None, pad=(0, 0, 0, 0)):
    """One data sample per row of the (B, L) ids ``tok``: its ids and mask,
    a random (1, size, size) gt (generator seed 0), ``ori_shape`` ``ori``
    (default (size, size)) and letterbox padding ``pad``."""
    g = torch.Generator().manual_seed(0)
    out = []
    for t in tok:
        ds = SegDataSample(metainfo=dict(
            text_tokens=t, text_mask=(t != 0).long(),
            ori_shape=ori or (size, size), img_shape=(size, size),
            pad_shape=(size, size), img_padding_size=pad))
        ds.gt_sem_seg = PixelData(
            data=torch.randint(0, 2, (1, size, size), generator=g))
        out.append(ds)
    return out


def text(b=2, length=6, c=32, pad=2):
    """Random TextFeatures: words (b, length, c) whose last ``pad``
    positions are padding, sentence (b, c)."""
    from ris_plugins.models import TextFeatures
    mask = torch.zeros(b, length, dtype=torch.bool)
    mask[:, length - pad:] = True
    return TextFeatures(torch.randn(b, length, c), torch.randn(b, c), mask)


def cris_text(b=2, L=8, c_word=32, c_sent=48, seed=0):
    """Seeded TextFeatures: words (b, L, c_word) with positions 5.. padded,
    sentence (b, c_sent)."""
    from ris_plugins.models import TextFeatures
    g = torch.Generator().manual_seed(seed)
    pad = torch.zeros(b, L, dtype=torch.bool)
    pad[:, 5:] = True
    return TextFeatures(torch.randn(b, L, c_word, generator=g),
                        torch.randn(b, c_sent, generator=g), pad)


def text_feats(batch=2, length=5, pad=(2, 0), seed=0, word=24,
               sent=20):
    """Seeded TextFeatures: words (B, T, word) whose last ``pad[b]``
    positions are padding, and sentences (B, sent)."""
    from ris_plugins.models import TextFeatures
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, length, dtype=torch.bool)
    for b, n in enumerate(pad):
        if n:
            mask[b, length - n:] = True
    return TextFeatures(torch.randn(batch, length, word, generator=g),
                        torch.randn(batch, sent, generator=g), mask)


# --------------------------------------------------------- tiny models
BCE = dict(type='CrossEntropyLoss', use_sigmoid=True)


def n_params(module: nn.Module) -> int:
    """Number of parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def randomize_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics, so eval-mode outputs exercise them."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=g) + 0.5
            m.bias.data = torch.randn(c, generator=g)
            m.running_mean = torch.randn(c, generator=g)
            m.running_var = torch.rand(c, generator=g) + 0.5


def tiny_model(**overrides):
    """The baseline RefSegmentor (ResNet-18 at width 8, 1-layer BERT 32,
    LanguageGatedFusion, FPNHead with one sigmoid channel); ``overrides``
    replace top-level keys of its config."""
    cfg = dict(
        type='RefSegmentor',
        data_preprocessor=dict(
            type='RefDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1],
            seg_pad_val=0),
        backbone=dict(type='ResNet', depth=18, stem_channels=8,
                      base_channels=8, out_indices=(0, 1, 2, 3)),
        text_encoder=dict(type='BertTextEncoder', config=TINY_BERT),
        fusion=dict(type='LanguageGatedFusion', in_channels=[8, 16, 32, 64],
                    channels=16, text_channels=32),
        decode_head=dict(
            type='FPNHead', in_channels=[16] * 4, in_index=[0, 1, 2, 3],
            feature_strides=[4, 8, 16, 32], channels=16, num_classes=2,
            out_channels=1, threshold=0.5,
            loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))
    cfg.update(overrides)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


TINY_SWIN = dict(
    arch=dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4]),
    window_size=2, out_indices=(0, 1, 2, 3))


def tiny_lavt():
    """LAVT (MultiModalSwin at width 16, 1-layer BERT 32, LAVTHead), eval."""
    model = MODELS.build(dict(
        type='RefSegmentor',
        data_preprocessor=dict(type='RefDataPreProcessor', mean=[0] * 3,
                               std=[1] * 3),
        backbone=dict(type='MultiModalSwin', text_channels=32, **TINY_SWIN),
        text_encoder=dict(type='BertTextEncoder', config=TINY_BERT,
                          sentence_pooling='cls'),
        decode_head=dict(
            type='LAVTHead', in_channels=[16, 32, 64, 128], channels=32,
            num_classes=2,
            loss_decode=dict(type='CrossEntropyLoss',
                             class_weight=[0.9, 1.1])),
        train_cfg=dict(), test_cfg=dict(mode='whole')))
    model.init_weights()
    return model.eval()


CRIS_TINY_TEXT = dict(hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2,
                      projection_dim=48)
CRIS_TINY_RN = dict(base_channels=8, stage_blocks=(1, 2, 1, 1),
                    num_attn_heads=4, output_dim=48)


def tiny_cris():
    """CRIS (CLIP ResNet at width 8, 2-layer CLIP text 32, CRISFPN,
    CRISHead) with random BN statistics, seed 0."""
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='RefSegmentor',
        data_preprocessor=dict(type='RefDataPreProcessor', mean=[0, 0, 0],
                               std=[1, 1, 1], seg_pad_val=0),
        backbone=dict(type='CLIPResNet', **CRIS_TINY_RN),
        text_encoder=dict(type='RefCLIPTextEncoder', context_length=8,
                          config=CRIS_TINY_TEXT),
        fusion=dict(type='CRISFPN', in_channels=[64, 128, 48],
                    out_channels=[16, 32, 48]),
        decode_head=dict(type='CRISHead', in_channels=32, channels=16,
                         sent_channels=48, num_layers=1, num_heads=2,
                         ffn_channels=64, loss_decode=BCE),
        train_cfg=dict(), test_cfg=dict(mode='whole')))
    model.init_weights()
    randomize_bn(model)
    return model


# Tiny towers: ViT width 32, 4 blocks; text width 24, 4 blocks.
ETRIS_TINY_VIT = dict(type='CLIPViT', arch=dict(embed_dims=32, num_layers=4,
                                                num_heads=4,
                                                feedforward_channels=64),
                      img_size=64, patch_size=16, output_dim=16)
ETRIS_TINY_TEXT = dict(type='RefCLIPTextEncoder', context_length=8,
                       config=dict(hidden_size=24, intermediate_size=48,
                                   num_hidden_layers=4,
                                   num_attention_heads=2,
                                   projection_dim=20))
ETRIS_TINY_BRIDGER = dict(type='BridgerViT', visual_dim=32, text_dim=24,
                          dim=8, num_heads=2, num_stages=2)
# Tiny CLIP ResNet: w = 8, one Bottleneck per stage; widths after stem +
# layer1 / layer2 / layer3 / layer4: 32 / 64 / 128 / 256; 64 x 64 input
# gives 16^2, 8^2, 4^2, 2^2 maps.
ETRIS_TINY_RN = dict(type='CLIPResNet', base_channels=8,
                     stage_blocks=(1, 1, 1, 1), input_size=64,
                     num_attn_heads=2, output_dim=16)
ETRIS_TINY_BRIDGER_RN = dict(type='BridgerRN', visual_dim=(64, 128, 256),
                             text_dim=24, d_model=8, num_heads=2,
                             ffn_dim=16)
RN_TRAINABLE = ('attnpool.positional_embedding', 'position_embedding')


def tiny_dual_encoder(**kw):
    """DualEncoderBackbone on the tiny ETRIS towers with a 2-stage
    BridgerViT after blocks (2, 2) and (4, 4), visual tap 2; ``kw``
    replace its keys. Seed 0."""
    torch.manual_seed(0)
    cfg = dict(type='DualEncoderBackbone', visual=ETRIS_TINY_VIT,
               text=ETRIS_TINY_TEXT,
               interactions=[dict(after=[(2, 2), (4, 4)],
                                  module=ETRIS_TINY_BRIDGER)],
               visual_taps=(2, ))
    cfg.update(kw)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def tiny_etris(backbone: dict = None, extra_input: bool = False):
    """RefSegmentor on the tiny towers (HANeck, CRISHead); ``backbone``
    overrides the DualEncoderBackbone's keys. Seed 0."""
    torch.manual_seed(0)
    bb = dict(type='DualEncoderBackbone', visual=ETRIS_TINY_VIT,
              text=ETRIS_TINY_TEXT,
              interactions=[dict(after=[(2, 2), (4, 4)],
                                 module=ETRIS_TINY_BRIDGER)],
              visual_taps=(2, 3))
    bb.update(backbone or {})
    model = MODELS.build(dict(
        type='RefSegmentor',
        data_preprocessor=dict(type='RefDataPreProcessor', mean=[0, 0, 0],
                               std=[1, 1, 1], seg_pad_val=0),
        backbone=bb,
        text_encoder=None,
        fusion=dict(type='HANeck', in_channels=[32, 32, 16], channels=16,
                    text_channels=20, num_heads=2, extra_input=extra_input),
        decode_head=dict(type='CRISHead', in_channels=16, channels=8,
                         sent_channels=20, text_channels=24, num_layers=1,
                         num_heads=2, ffn_channels=32, loss_decode=BCE),
        train_cfg=dict(), test_cfg=dict(mode='whole')))
    model.init_weights()
    return model


def tiny_etris_rn():
    """ETRIS ResNet variant: tiny CLIP ResNet + text towers, BridgerRN
    between layer2/3/4, HANeck, CRISHead. Seed 0."""
    torch.manual_seed(0)
    model = MODELS.build(dict(
        type='RefSegmentor',
        data_preprocessor=dict(type='RefDataPreProcessor', mean=[0, 0, 0],
                               std=[1, 1, 1], seg_pad_val=0),
        backbone=dict(type='DualEncoderBackbone', visual=ETRIS_TINY_RN,
                      text=ETRIS_TINY_TEXT,
                      interactions=[dict(after=[(1, 2), (2, 3), (3, 4)],
                                         module=ETRIS_TINY_BRIDGER_RN)],
                      visual_taps=(1, 2), trainable=RN_TRAINABLE),
        text_encoder=None,
        fusion=dict(type='HANeck', in_channels=[64, 128, 16], channels=16,
                    strides=[2, 1, 2], text_channels=20, num_heads=2),
        decode_head=dict(type='CRISHead', in_channels=16, channels=8,
                         sent_channels=20, text_channels=24, num_layers=1,
                         num_heads=2, ffn_channels=32, loss_decode=BCE),
        train_cfg=dict(), test_cfg=dict(mode='whole')))
    model.init_weights()
    return model


# BarLeRIa adapters on the tiny towers (ViT width 32, text width 24).
TINY_SNF = dict(type='SNF', visual_dim=32, text_dim=24, visual_layers=4,
                text_layers=4, flow_length=4)
TINY_LIM = dict(type='LIMPrompts', visual_dim=32, text_dim=24, hidden_dim=8,
                text_to_vision=True, vision_to_text=True)
LIM_HOOK = dict(after=(0, 0), module=TINY_LIM)

# SAM ViT: width 32, 4 blocks, global attention in blocks 1 and 3.
TINY_SAM = dict(embed_dims=32, num_layers=4, num_heads=2,
                feedforward_channels=64, global_attn_indexes=[1, 3])

# CLIP ViT: width 64, 2 layers, 4 heads, MLP 256, patch 16.
TINY_CLIP_VIT_ARCH = dict(embed_dims=64, num_layers=2, num_heads=4,
                          feedforward_channels=256)


def tiny_vit(**kw):
    """CLIPViT at TINY_CLIP_VIT_ARCH with taps (0, 1) and projection to 32,
    built from the mmseg scope as in configs; ``kw`` replace its keys."""
    cfg = dict(type='CLIPViT', arch=TINY_CLIP_VIT_ARCH, out_indices=(0, 1),
               output_dim=32)
    cfg.update(kw)
    return MODELS.build(cfg)


# ------------------------------------------------ name-seeded demo models
SENTENCES = ('the small red circle', 'the blue square right of the large '
             'green star at the top')


def name_seeded_(model: torch.nn.Module) -> torch.nn.Module:
    """Overwrite every floating parameter and buffer in place with values
    drawn from a generator seeded by its name: norm weights 1 + N(0, 0.1),
    BN running variances in [0.5, inf), matrices N(0, 1 / fan_in), other
    vectors N(0, 0.1)."""
    norms = {
        name for name, m in model.named_modules()
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm,
                          torch.nn.LayerNorm, torch.nn.GroupNorm))
    }
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            values = torch.randn(t.shape, generator=g)
            owner, _, leaf = name.rpartition('.')
            if owner in norms and leaf == 'weight':
                values = 1 + 0.1 * values
            elif leaf == 'running_var':
                values = values.abs() + 0.5
            elif t.dim() >= 2:
                values = values / t[0].numel()**0.5
            else:
                values = 0.1 * values
            t.copy_(values)
    return model


def demo_inputs(cfg):
    """One image twice (2, 3, 160, 160) and two sentences' tokens / mask
    (2, L) from ``cfg``'s tokenizer: the two outputs differ only through
    the text."""
    from ris_plugins.utils.synthetic import tokenize
    g = torch.Generator().manual_seed(0)
    img = torch.randn(1, 3, 160, 160, generator=g).expand(2, -1, -1, -1)
    texts = [tokenize(cfg, s) for s in SENTENCES]
    tokens = torch.stack([t['text_tokens'] for t in texts])
    mask = torch.stack([t['text_mask'] for t in texts])
    return img, tokens, mask


# ---------------------------------------------------------------- images
def exif_rotated_jpeg(path, size=48):
    """Write a square JPEG whose EXIF says Orientation=6 (rotate 90 deg CW
    for display) to ``path``; returns its stored pixels (size, size, 3)
    BGR uint8 as decoded by PIL, which does not apply EXIF unless asked."""
    import numpy as np
    from PIL import Image
    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[:size // 4, :, 0] = 250  # red band along the top
    rgb[:, :size // 4, 2] = 250  # blue band down the left side
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(path, exif=exif, quality=100, subsampling=0)
    with Image.open(path) as img:
        assert img.getexif()[0x0112] == 6
        return np.asarray(img.convert('RGB'))[..., ::-1]


# ------------------------------------------------------------ converters
def train_py_file(path, state, params) -> None:
    """Write ``state`` as CRIS's train.py does: DDP ``module.`` keys, plus
    epoch / IoU / precision and optimizer + MultiStepLR states."""
    opt = torch.optim.Adam(params, lr=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [35], 0.1)
    torch.save({'epoch': 50, 'cur_iou': 0.7, 'best_iou': 0.71,
                'prec': {'Pr@50': 0.8, 'Pr@90': 0.2},
                'state_dict': {'module.' + k: v for k, v in state.items()},
                'optimizer': opt.state_dict(),
                'scheduler': sched.state_dict()}, path)


# ---------------------------------------------------------- quantization
W_QSCHEME = dict(type='UniformQuantizer', granularity='channel')
A_QSCHEME = dict(type='UniformQuantizer', symmetric=False)
M_QSCHEME = dict(type='UniformQuantizer', granularity='head', ch_axis=1)


def qcfg(bits=8, **kw):
    """PTQ config: per-channel weights, asymmetric activations, per-head
    matmuls; twin-uniform softmax / GELU and RORQ on the text encoder."""
    cfg = dict(w_bits=bits, a_bits=bits,
               global_qconfig=dict(w_qscheme=W_QSCHEME, a_qscheme=A_QSCHEME,
                                   m_qscheme=M_QSCHEME),
               rules=[dict(pattern=r'.*matmul2', types=['MatMul'],
                           a_qscheme=dict(type='TwinUniformSoftmaxQuantizer')),
                      dict(pattern=r'.*ffn\.layers\.1', types=['Linear'],
                           a_qscheme=dict(type='TwinUniformGELUQuantizer')),
                      dict(pattern=r'text_encoder\..*', types=['Linear'],
                           a_qscheme=dict(type='RORQQuantizer'))])
    cfg.update(kw)
    return cfg


def batch(n=2, seed=0):
    """(n, 3, 64, 64) random images and ``samples(n, seed=seed)``."""
    torch.manual_seed(seed)
    return torch.rand(n, 3, 64, 64), samples(n, seed=seed)


def run(model, data):
    """Plain-tensor forward of ``model`` on ``batch()`` data, no grad."""
    with torch.no_grad():
        return model(data[0], *text_of(data[1]))


def calibrate_on(model, state, data, **kw):
    """``calibrate`` the quantization ``state`` of ``model`` on ``batch()``
    data, one image per calibration sample; ``kw`` go to ``calibrate``."""
    from ris_plugins.quantization import calibrate
    imgs, ds = data
    return calibrate(state, lambda i: run(model, (imgs[i:i + 1], ds[i:i + 1])),
                     range(len(imgs)), **kw)


MINMAX = dict(
    global_qconfig=dict(
        w_qscheme=dict(type='UniformQuantizer', granularity='channel'),
        a_qscheme=dict(type='UniformQuantizer', symmetric=False),
        m_qscheme=dict(type='UniformQuantizer', symmetric=False)),
    rules=[dict(pattern=r'backbone\.(conv1|stem\.0)', a_qscheme=None,
                optional=True),
           dict(pattern=r'.*conv_seg', skip=True, optional=True)])


# -------------------------------------------------------- visualization
def rect(h, w, y0, y1, x0, x1):
    """(h, w) bool mask, True on rows [y0, y1) and columns [x0, x1)."""
    import numpy as np
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def sample(pred=None, gt=None, text='the red circle', **meta):
    """A SegDataSample with metainfo ``meta`` (plus ``text`` unless None)
    and (h, w) masks ``pred`` / ``gt`` as pred_sem_seg / gt_sem_seg."""
    ds = SegDataSample(metainfo=dict(meta, **({'text': text}
                                              if text is not None else {})))
    if pred is not None:
        ds.pred_sem_seg = PixelData(data=torch.from_numpy(pred[None]).long())
    if gt is not None:
        ds.gt_sem_seg = PixelData(data=torch.from_numpy(gt[None]).long())
    return ds


# ------------------------------------------------------------ gradients
def summed_loss(model, inputs, data_samples, seed: int = 0):
    """Sum of the ``loss*`` entries of ``model``'s ``mode='loss'`` output
    on ``inputs`` and the text of ``data_samples``; the RNG is reseeded
    first so that dropout / drop-path masks repeat between calls."""
    torch.manual_seed(seed)
    losses = run_samples(model, inputs, data_samples, mode='loss')
    return sum(v for k, v in losses.items() if 'loss' in k)


def assert_gradient_matches_finite_difference(loss_fn, params, eps=1e-6,
                                              rtol=1e-6):
    """Autograd's gradient g of the scalar ``loss_fn()`` w.r.t. ``params``
    against a central finite difference along d = g / |g|:
    (L(p + eps d) - L(p - eps d)) / (2 eps) must equal g . d = |g|.

    Run it in float64 (the differences are ~1e-6 of the loss). Every
    tensor in ``params`` must influence the loss (autograd raises
    otherwise) and |g| must be non-zero. ``loss_fn`` must be
    deterministic (reseed dropout inside it). Parameters are restored.
    """
    params = list(params)
    default = torch.get_default_dtype()
    # float64 default: tensors made inside forward passes (e.g.
    # transformers' causal masks) match float64 models
    torch.set_default_dtype(torch.float64)
    try:
        grads = torch.autograd.grad(loss_fn(), params)
        norm = torch.sqrt(sum((g.double()**2).sum() for g in grads))
        assert norm > 0, 'the gradient is zero'
        steps = [eps * g / norm for g in grads]
        with torch.no_grad():
            for p, s in zip(params, steps):
                p.add_(s)
            up = loss_fn()
            for p, s in zip(params, steps):
                p.sub_(2 * s)
            down = loss_fn()
            for p, s in zip(params, steps):
                p.add_(s)
    finally:
        torch.set_default_dtype(default)
    fd = float(up - down) / (2 * eps)
    assert abs(fd - float(norm)) <= rtol * float(norm) + 1e-9, (
        fd, float(norm))


# ------------------------------------ speed switches (use_sdpa, with_cp)
# Each switch test runs a module and a deep copy with the switch on (same
# weights: ``switched`` / ``with_cp_copy``) and compares outputs, input and
# parameter gradients to float32 rounding (``assert_close``); a spy on
# F.scaled_dot_product_attention (``SDPASpy``) or on our checkpoint
# (``checkpoint_calls``) proves which path ran, so a switch that does
# nothing fails.
def padded_mask(batch: int = 2, length: int = 6) -> torch.Tensor:
    """(B, T) bool, True at padding: sample 0 has 3 real words, 3 pads;
    sample 1 has none."""
    mask = torch.zeros(batch, length, dtype=torch.bool)
    mask[0, 3:] = True
    return mask


def leaf(*shape, seed: int) -> torch.Tensor:
    """A seeded standard-normal tensor of ``shape`` that requires grad."""
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


def forward_backward(module: nn.Module, make_inputs: Callable[[], Tuple],
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


def assert_same_run(ref: Result, got: Result) -> None:
    """Two ``forward_backward`` results agree (``assert_close``): outputs,
    input grads (None on both sides for unused inputs) and the gradients
    of the same, non-empty set of parameters."""
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
    ref = forward_backward(module, make_inputs, forward)
    assert spy.calls == explicit_calls
    got = forward_backward(switched(module), make_inputs, forward)
    assert spy.calls - explicit_calls == sdpa_calls
    assert_same_run(ref, got)


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
    """Two ``step`` results agree (``assert_close``): output, at least one
    input grad, and the gradients of the same, non-empty parameter set."""
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
    from ris_plugins.models.utils import checkpoint as ckpt
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
