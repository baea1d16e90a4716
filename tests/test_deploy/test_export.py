"""ONNX export of the plain-tensor forward: every tiny config runs in ONNX
Runtime with the PyTorch logits (<= 1e-4), at the export batch and another
one (dynamic batch); export-only code paths equal the eager ones; bad inputs
and files are named."""
import glob
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from mmseg.registry import MODELS
from ris_plugins.deploy import (ORTSegmentor, check_inputs, export_onnx,
                                max_abs_diff, ort_session)
from ris_plugins.utils.synthetic import synthetic_inputs

from ..conftest import ROOT

pytest.importorskip('onnxruntime')

CONFIGS = sorted(
    glob.glob(osp.join(ROOT, 'configs', 'demo', '*.py')) +
    glob.glob(osp.join(ROOT, 'configs', 'mix', 'mix-small_*.py')))
#: FP32 ONNX Runtime vs PyTorch logits (issue 12 §1)
TOL = 1e-4


def _inputs(cfg, batch):
    img, tokens, mask = synthetic_inputs(cfg, 1)[0]
    return (img.repeat(batch, 1, 1, 1), tokens.repeat(batch, 1),
            mask.repeat(batch, 1))


def _build(cfg):
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def _check_export(cfg, tmp_path):
    model = _build(cfg)
    path = export_onnx(model, _inputs(cfg, 2), str(tmp_path / 'm.onnx'))
    import onnx
    onnx.checker.check_model(path)
    session = ort_session(path)
    assert [i.name for i in session.get_inputs()] == ['img', 'tokens',
                                                      'mask']
    for batch in (2, 1, 3):  # the example's batch and two others
        diff = max_abs_diff(model, session, _inputs(cfg, batch))
        assert diff <= TOL, (batch, diff)
    assert not model.training  # the export must not flip the mode


def test_export_tiny_baseline(tiny_model_cfg, tmp_path):
    _check_export(tiny_model_cfg, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('config', CONFIGS,
                         ids=[osp.basename(c)[:24] for c in CONFIGS])
def test_export_every_tiny_config(config, tmp_path):
    from mmengine.config import Config
    _check_export(Config.fromfile(config), tmp_path)


def test_cris_projector_export_path_equals_grouped_conv():
    from ris_plugins.models.heads.cris_head import \
        TextConditionedProjector as Projector
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 6, generator=g)
    weight = torch.randn(3, 5, 3, 3, generator=g)
    bias = torch.randn(3, generator=g)
    ref = F.conv2d(x.reshape(1, 15, 7, 6), weight, bias, padding=1,
                   groups=3).transpose(0, 1)
    out = Projector._export_forward(x, weight, bias, 3)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_window_reverse_patch_equals_mmpretrain():
    from mmpretrain.models.utils.attention import ShiftWindowMSA

    from ris_plugins.deploy.patches import _window_reverse, export_patches
    windows = torch.randn(2 * 4, 3, 3, 5)
    ref = ShiftWindowMSA.window_reverse(windows, 6, 6, 3)
    assert torch.equal(_window_reverse(windows, 6, 6, 3), ref)
    original = ShiftWindowMSA.__dict__['window_reverse']
    with export_patches():
        assert ShiftWindowMSA.__dict__['window_reverse'] is not original
    assert ShiftWindowMSA.__dict__['window_reverse'] is original


def _export_module(module, x, path):
    """ONNX export of ``module(x)`` (batch dynamic) inside the export
    patches; returns the ONNX Runtime session."""
    from ris_plugins.deploy.export import ort_session
    from ris_plugins.deploy.patches import export_patches
    with torch.no_grad(), export_patches():
        torch.onnx.export(module.eval(), (x, ), path, dynamo=False,
                          opset_version=17, input_names=['x'],
                          dynamic_axes={'x': {0: 'batch'}})
    return ort_session(path, optimized_path=path + '.opt.onnx')


def test_shift_window_mask_exports_as_a_constant(tmp_path):
    """The shifted-window mask depends on H, W only: ONNX Runtime folds it
    at load (without the patch its optimised graph of this block keeps 464
    nodes, 9 ``ScatterND`` and 36 ``Range`` of them rebuilding the mask at
    every run; with it, 91 and none), and the file still runs at any batch
    size with torch's outputs."""
    import onnx
    from mmpretrain.models.utils.attention import ShiftWindowMSA

    class Block(torch.nn.Module):

        def __init__(self):
            super().__init__()
            self.attn = ShiftWindowMSA(16, 2, window_size=4, shift_size=2)

        def forward(self, x):  # (B, 64, 16) on an 8x8 grid
            return self.attn(x, (8, 8))

    torch.manual_seed(0)
    block, path = Block().eval(), str(tmp_path / 'block.onnx')
    sess = _export_module(block, torch.randn(1, 64, 16), path)
    ops = [n.op_type for n in onnx.load(path + '.opt.onnx').graph.node]
    assert 'ScatterND' not in ops and 'Range' not in ops, ops
    for b in (1, 3):
        x = torch.randn(b, 64, 16)
        out = sess.run(None, {'x': x.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(out), block(x),
                                   rtol=1e-5, atol=1e-5)


def test_cris_attention_pool_resize_folds(tmp_path):
    """CRIS's attention pool resizes its positional table to the feature
    size; exported at a fixed size, ONNX Runtime folds that Resize at load
    (it cost 1.2 ms of CRIS-small's 13 ms per image before)."""
    import onnx

    from ris_plugins.models.backbones.clip_resnet import \
        DenseAttentionPool2d
    torch.manual_seed(0)
    pool = DenseAttentionPool2d(4, 32, 4, 16).eval()
    path = str(tmp_path / 'pool.onnx')
    x = torch.randn(2, 32, 5, 5)
    sess = _export_module(pool, x, path)
    out = sess.run(None, {'x': x.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), pool(x), rtol=1e-5,
                               atol=1e-5)
    optimized = [n.op_type for n in onnx.load(path + '.opt.onnx').graph.node]
    assert 'Resize' not in optimized


@pytest.mark.parametrize('norm,shape', [
    (torch.nn.InstanceNorm1d(5), (2, 5, 7)),
    (torch.nn.InstanceNorm1d(5), (5, 7)),  # unbatched
    (torch.nn.InstanceNorm1d(5, affine=True), (3, 5, 7)),
    (torch.nn.InstanceNorm2d(4, affine=True), (2, 4, 3, 6)),
])
def test_instance_norm_patch_equals_torch(norm, shape):
    """The export-time instance norm (explicit reductions) equals torch's
    op; outside ``export_patches`` the library forward is back."""
    from torch.nn.modules.instancenorm import _InstanceNorm

    from ris_plugins.deploy.patches import export_patches
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g) * 3 + 1
    if norm.affine:
        with torch.no_grad():
            norm.weight.copy_(torch.randn(norm.weight.shape, generator=g))
            norm.bias.copy_(torch.randn(norm.bias.shape, generator=g))
    ref = norm(x)
    original = _InstanceNorm.forward
    with export_patches():
        assert _InstanceNorm.forward is not original
        out = norm(x)
    assert _InstanceNorm.forward is original
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_named():
    img = torch.zeros(1, 3, 8, 8)
    tokens = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="'tokens'"):
        check_inputs((img, tokens.float(), tokens))
    with pytest.raises(ValueError, match="'img'"):
        check_inputs((img[0], tokens, tokens))
    with pytest.raises(ValueError, match='disagree'):
        check_inputs((img, tokens, tokens[:, :3]))
    with pytest.raises(ValueError, match='expected 3 inputs'):
        check_inputs((img, tokens))


def test_export_refuses_training_mode(tiny_model_cfg, tmp_path):
    model = _build(tiny_model_cfg).train()
    path = tmp_path / 'm.onnx'
    with pytest.raises(ValueError, match='eval'):
        export_onnx(model, _inputs(tiny_model_cfg, 1), str(path))
    assert not path.exists()


def test_ort_segmentor_checks(tiny_model_cfg, tmp_path):
    with pytest.raises(FileNotFoundError, match='missing.onnx'):
        ORTSegmentor(str(tmp_path / 'missing.onnx'))
    junk = tmp_path / 'junk.onnx'
    junk.write_bytes(b'not an onnx file')
    with pytest.raises(ValueError, match='junk.onnx'):
        ORTSegmentor(str(junk))
    # a valid ONNX file that is not a RIS model
    other = tmp_path / 'other.onnx'
    torch.onnx.export(torch.nn.Linear(2, 2), (torch.zeros(1, 2), ),
                      str(other), dynamo=False, input_names=['x'])
    with pytest.raises(ValueError, match=r"other.onnx.*\['x'\]"):
        ORTSegmentor(str(other))
    model = _build(tiny_model_cfg)
    inputs = _inputs(tiny_model_cfg, 1)
    path = export_onnx(model, inputs, str(tmp_path / 'm.onnx'))
    runner = ORTSegmentor(path, threads=1)
    with torch.no_grad():
        torch.testing.assert_close(runner(*inputs), model(*inputs),
                                   rtol=0, atol=TOL)
    img, tokens, mask = inputs
    with pytest.raises(ValueError, match="'img' has shape.*exported for"):
        runner(F.interpolate(img, scale_factor=2), tokens, mask)
    with pytest.raises(ValueError, match="'tokens' has shape"):
        runner(img, tokens[:, :-1], mask[:, :-1])
