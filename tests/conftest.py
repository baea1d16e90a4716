"""Shared fixtures: a small generated RefShapes and a tiny model config."""
import importlib.util
import os.path as osp

import pytest
from mmseg.utils import register_all_modules

import ris_plugins  # noqa: F401  (registers the plugin's modules)

register_all_modules(init_default_scope=True)

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
    cfg.model.fusion.update(
        in_channels=[8, 16, 32, 64], channels=16, text_channels=32)
    cfg.model.decode_head.update(in_channels=[16] * 4, channels=16)
    return cfg
