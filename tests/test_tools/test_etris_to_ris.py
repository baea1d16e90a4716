"""tools/model_converters/etris_to_ris.py: ETRIS train.py checkpoints
(kkakkkka/ETRIS: 'state_dict' of the DDP model, module.-prefixed backbone.*
/ bridger.* / neck.* / decoder.* / proj.*) of the ViT and ResNet variants
convert into our DualEncoderBackbone models with identical outputs; the
full configs' keys are covered."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.utils.state_dict import load_state_dict_strict

from ..conftest import (ROOT, load_tool, text_of, tiny_etris_rn, token_samples,
                        tokens, train_py_file)

DEMO = osp.join(ROOT, 'configs', 'demo',
                'etris-small_tiny-vit-clip_1xb16-2k_refshapes-160x160.py')


def converter():
    return load_tool('model_converters/etris_to_ris.py')


def demo_vit():
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(DEMO).model)
    model.init_weights()
    return model.eval()


def randomize(model):
    """Random values everywhere (BN statistics included)."""
    g = torch.Generator().manual_seed(3)
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            t.data = torch.rand(t.shape, generator=g) + 0.5
    return model


def round_trip(tmp_path, monkeypatch, model):
    """Write ``model`` as an ETRIS train.py file, run the converter's
    command line; (upstream state, converted state)."""
    conv = converter()
    upstream = conv.to_upstream_etris(model.state_dict())
    upstream['backbone.logit_scale'] = torch.tensor(4.6)
    src, dst = tmp_path / 'best_model.pth', tmp_path / 'etris_ris.pth'
    train_py_file(src, upstream, [torch.nn.Parameter(torch.ones(2))])
    monkeypatch.setattr(sys, 'argv', ['etris_to_ris.py', str(src), str(dst)])
    conv.main()
    converted = torch.load(dst, map_location='cpu', weights_only=True)
    return upstream, converted['state_dict']


def test_vit_official_names_and_round_trip(tmp_path, monkeypatch):
    model = demo_vit()
    upstream, converted = round_trip(tmp_path, monkeypatch, model)
    # Bridger_ViT names (model/bridger.py), tiny widths: C_v 64, C_t 64,
    # d 32; stage s's ladder norm is ln_v[s - 1].
    expected = {
        'bridger.zoom_in.0.0.weight': (32, 64, 1, 1),
        'bridger.zoom_in.2.0.weight': (64, 32, 1, 1),  # ConvTranspose
        'bridger.zoom_out.0.1.running_var': (64, ),
        'bridger.linear1.1.weight': (32, 64),
        'bridger.linear2.2.bias': (64, ),
        'bridger.fusion_v.0.multihead_attn.in_proj_weight': (96, 32),
        'bridger.fusion_t.2.multihead_attn.out_proj.bias': (32, ),
        'bridger.ln_v.0.weight': (32, ),
        'bridger.ln_t.1.bias': (32, ),
        'neck.fusion3.multihead_attn.in_proj_weight': (192, 64),
        'neck.txt_proj.weight': (64, 64),
        'neck.f3_proj.0.weight': (64, 64, 1, 1),
        'neck.f5_proj.0.weight': (64, 64, 1, 1),
        'neck.coordconv.0.conv1.1.weight': (64, ),
        'decoder.layers.0.multihead_attn.in_proj_weight': (192, 64),
        'proj.txt.weight': (289, 64),
        'backbone.visual.positional_embedding': (101, 64),
        'backbone.visual.proj': (64, 64),
    }
    for key, shape in expected.items():
        assert tuple(upstream[key].shape) == shape, key
    assert 'bridger.ln_v.2.weight' not in upstream
    torch.testing.assert_close(
        converted['backbone.interactions.0.stages.1.ladder_v.weight'],
        upstream['bridger.ln_v.0.weight'])
    fresh = randomize(demo_vit())
    load_state_dict_strict(fresh, converted, 'etris vit')
    ds = token_samples(tokens(6, 4, total=17), size=160)
    img = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(img, *text_of(ds)),
                                   model(img, *text_of(ds)),
                                   rtol=0, atol=0)


def test_rn_official_names_and_round_trip(tmp_path, monkeypatch):
    model = tiny_etris_rn().eval()
    upstream, converted = round_trip(tmp_path, monkeypatch, model)
    # Bridger_RN + Interactor names (model/bridger.py, model/layers.py).
    for key in ('bridger.zoom_in.0.weight', 'bridger.zoom_out.2.weight',
                'bridger.fusion_v.0.self_attn.in_proj_weight',
                'bridger.fusion_v.1.multihead_attn.out_proj.weight',
                'bridger.fusion_t.2.linear1.weight',
                'bridger.fusion_t.2.linear2.bias',
                'bridger.fusion_v.0.norm3.weight', 'bridger.ln_v.1.weight',
                'bridger.linear1.0.weight',
                'backbone.visual.attnpool.connect.0.weight'):
        assert key in upstream, key
    torch.testing.assert_close(
        converted['backbone.interactions.0.stages.0.fusion_v.norms.2.weight'],
        upstream['bridger.fusion_v.0.norm3.weight'])
    fresh = randomize(tiny_etris_rn())
    load_state_dict_strict(fresh, converted, 'etris rn')
    ds = token_samples(tokens(6, 4))
    img = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(img, *text_of(ds)),
                                   model(img, *text_of(ds)),
                                   rtol=0, atol=0)


def test_not_an_etris_checkpoint_is_named(tmp_path):
    src = tmp_path / 'not_etris.pth'
    torch.save({'state_dict': {'module.backbone.foo': torch.ones(1)}}, src)
    with pytest.raises(KeyError, match='not_etris.pth: not an ETRIS'):
        converter().convert_file(str(src))


@pytest.mark.parametrize('config', [
    'etris_vit-b16_8xb4-50e_refcoco-416x416.py',
    'etris_r50_8xb4-50e_refcoco-416x416.py',
    'etris_r101_8xb4-50e_refcoco-416x416.py',
    'etris-as-released_r50_8xb4-50e_refcoco-416x416.py',
])
def test_full_config_key_coverage(config):
    """Names and shapes only (meta device): every key of the full model
    has an official name and converts back to itself."""
    cu = load_tool('model_converters/converter_utils.py')
    conv = converter()
    state = cu.build_model(osp.join(ROOT, 'configs', 'etris', config),
                           meta=True).state_dict()
    upstream = conv.to_upstream_etris(state)
    assert len(upstream) == len(state) - 4 * 12  # CLIP text packs q, k, v
    if 'vit' in config:
        assert upstream['bridger.ln_v.1.weight'].shape == (64, )
        assert upstream['backbone.visual.positional_embedding'].shape == (
            677, 768)
    else:
        assert upstream['bridger.zoom_in.2.weight'].shape == (2048, 64, 2, 2)
    back = conv.convert_etris(upstream)
    assert {k: v.shape for k, v in back.items()} == {
        k: v.shape for k, v in state.items()}


def test_as_released_rn_config_differs_only_in_mask_padding():
    base = Config.fromfile(osp.join(
        ROOT, 'configs', 'etris', 'etris_r50_8xb4-50e_refcoco-416x416.py'))
    released = Config.fromfile(osp.join(
        ROOT, 'configs', 'etris',
        'etris-as-released_r50_8xb4-50e_refcoco-416x416.py'))
    bridger = released.model.backbone.interactions[0].module
    assert bridger.mask_padding is False
    assert base.model.backbone.interactions[0].module.mask_padding is True
    bridger.mask_padding = True
    assert released.model == base.model
