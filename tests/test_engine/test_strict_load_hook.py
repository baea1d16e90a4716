"""StrictLoadHook: a checkpoint of another model is an error naming the file,
the first keys and both shapes, for load_from (mim test) and resume."""
import os.path as osp
import shutil

import pytest
import torch
from mmengine.runner import Runner
from mmseg.registry import MODELS

from ..conftest import tiny_cfg


def _cfg(root, work, width=16, **kwargs):
    cfg = tiny_cfg(root, work, **kwargs)
    cfg.model.fusion.channels = width
    cfg.model.decode_head.update(in_channels=[width] * 4, channels=width)
    return cfg


@pytest.fixture
def other_model_ckpt(refshapes_root, tmp_path):
    """A checkpoint of the tiny model at width 32 (the tests use 16)."""
    model = MODELS.build(_cfg(refshapes_root, str(tmp_path), 32).model)
    path = str(tmp_path / 'wide.pth')
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    return path


def _first_shape_mismatch(model_sd, ckpt_sd):
    return next(k for k in model_sd
                if k in ckpt_sd and model_sd[k].shape != ckpt_sd[k].shape)


def test_load_from_other_model_is_an_error(refshapes_root, tmp_path,
                                           other_model_ckpt):
    cfg = _cfg(refshapes_root, str(tmp_path / 'work'))
    cfg.load_from = other_model_ckpt
    runner = Runner.from_cfg(cfg)
    model_sd = {k: v.clone() for k, v in runner.model.state_dict().items()}
    ckpt_sd = torch.load(other_model_ckpt, weights_only=True)['state_dict']
    key = _first_shape_mismatch(model_sd, ckpt_sd)
    with pytest.raises(RuntimeError) as err:
        runner.test()
    msg = str(err.value)
    assert other_model_ckpt in msg and 'strict=False' in msg
    assert (f'size mismatch for {key}: copying a param with shape '
            f'{ckpt_sd[key].shape} from checkpoint, the shape in current '
            f'model is {model_sd[key].shape}') in msg


def test_missing_and_unexpected_keys_are_named(refshapes_root, tmp_path):
    cfg = _cfg(refshapes_root, str(tmp_path / 'work'))
    state = MODELS.build(cfg.model).state_dict()
    dropped = 'decode_head.conv_seg.weight'
    state.pop(dropped)
    state['decode_head.extra.weight'] = torch.zeros(1)
    # DDP-style prefixes are stripped as Runner.load_checkpoint does.
    state = {f'module.{k}': v for k, v in state.items()}
    path = str(tmp_path / 'partial.pth')
    torch.save({'state_dict': state}, path)
    cfg.load_from = path
    with pytest.raises(RuntimeError) as err:
        Runner.from_cfg(cfg).test()
    msg = str(err.value)
    assert path in msg
    assert f'1 missing keys (in the model, not in the checkpoint), first: ' \
        f'{dropped}' in msg
    assert 'first: decode_head.extra.weight' in msg


def test_partial_initialisation_is_an_explicit_opt_in(
        refshapes_root, tmp_path, other_model_ckpt):
    cfg = _cfg(refshapes_root, str(tmp_path / 'work'))
    cfg.load_from = other_model_ckpt
    cfg.default_hooks.strict_load.strict = False
    metrics = Runner.from_cfg(cfg).test()
    assert 'oIoU' in metrics


def test_matching_checkpoint_loads(refshapes_root, tmp_path):
    cfg = _cfg(refshapes_root, str(tmp_path / 'work'))
    model = MODELS.build(cfg.model)
    path = str(tmp_path / 'same.pth')
    torch.save({'state_dict': model.state_dict()}, path)
    cfg.load_from = path
    runner = Runner.from_cfg(cfg)
    runner.load_or_resume()
    torch.testing.assert_close(runner.model.state_dict(), model.state_dict())


@pytest.mark.slow
@pytest.mark.parametrize('auto', [False, True])
def test_resume_from_other_model_names_file_and_key(
        refshapes_root, tmp_path, other_model_ckpt, auto):
    work = str(tmp_path / 'work')
    cfg = _cfg(refshapes_root, work)
    cfg.resume = True
    cfg.default_hooks.strict_load.strict = False  # resume stays strict
    if auto:  # resume the latest checkpoint of the work_dir
        path = osp.join(work, 'iter_2.pth')
        shutil.os.makedirs(work, exist_ok=True)
        shutil.copy(other_model_ckpt, path)
        with open(osp.join(work, 'last_checkpoint'), 'w') as f:
            f.write(path)
    else:
        path = cfg.load_from = other_model_ckpt
    runner = Runner.from_cfg(cfg)
    ckpt_sd = torch.load(path, weights_only=True)['state_dict']
    key = _first_shape_mismatch(runner.model.state_dict(), ckpt_sd)
    with pytest.raises(RuntimeError, match='cannot resume') as err:
        runner.train()
    assert path in str(err.value) and f'size mismatch for {key}:' in str(
        err.value)
