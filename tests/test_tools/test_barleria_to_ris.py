"""tools/model_converters/barleria_to_ris.py: BarLeRIa train.py
checkpoints (NastrondAd/BarLeRIa: module.-prefixed backbone.* with SNF
flows, intertwiner.*, side_adapter_network.*, side_linear.*, neck.*,
decoder.*, proj.*) convert into our DualEncoderBackbone (SNF, LIM, GST)
model with identical outputs; the full configs' keys are covered."""
import os.path as osp
import sys

import pytest
import torch
from mmengine.config import Config

from mmseg.registry import MODELS
from ris_plugins.utils.state_dict import load_state_dict_strict

from ..conftest import (ROOT, load_tool, text_of, token_samples, tokens,
                        train_py_file)

DEMO = osp.join(ROOT, 'configs', 'demo',
                'barleria-small_tiny-vit-clip_1xb16-2k_refshapes-160x160.py')
FULL = {
    'default': osp.join(ROOT, 'configs', 'barleria',
                        'barleria_vit-b16_8xb4-50e_refcoco-416x416.py'),
    'as-released': osp.join(
        ROOT, 'projects', 'barleria', 'configs',
        'barleria-as-released_vit-b16_8xb4-50e_refcoco-416x416.py'),
}


def converter():
    return load_tool('model_converters/barleria_to_ris.py')


def demo_model():
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(DEMO).model)
    model.init_weights()
    return model.eval()


def perturbed(model, scale=0.05):
    """Every parameter moved off its init (the flows off the identity)."""
    g = torch.Generator().manual_seed(3)
    for p in model.parameters():
        p.data += scale * torch.randn(p.shape, generator=g)
    return model


def test_official_names_flows_and_round_trip(tmp_path, monkeypatch):
    conv = converter()
    model = perturbed(demo_model()).eval()
    upstream = conv.to_upstream_barleria(model.state_dict())
    flow = 'backbone.visual.transformer.resblocks.3.flow2.'
    # flow.py NormalizingFlow: (1, d) planar parameters, (d,) affine, and
    # the log_jacobians aliases of transforms.*.
    assert upstream[flow + 'transforms.1.weight'].shape == (1, 64)
    assert upstream[flow + 'transforms.1.scale'].shape == (1, 64)
    assert upstream[flow + 'transforms.1.bias'].shape == (1, )
    assert upstream[flow + 'affine_transform.logsigma'].shape == (64, )
    assert torch.equal(upstream[flow + 'log_jacobians.1.weight'],
                       upstream[flow + 'transforms.1.weight'])
    assert 'backbone.transformer.resblocks.0.flow.affine_transform.mu' in \
        upstream
    for key in ('intertwiner.proj.0.weight', 'intertwiner.proj_txt.2.bias',
                'side_adapter_network.vit_model.patch_embed.proj.weight',
                'side_adapter_network.vit_model.pos_embed',
                'side_adapter_network.vit_model.blocks.0.mlp.fc1.weight',
                'side_adapter_network.vit_model.blocks.0.attn.qkv.bias',
                'side_adapter_network.vit_model.decoders.0.linear2.weight',
                'side_adapter_network.query_pos_embed',
                'side_adapter_network.fusion_layers.layer_0.input_proj.0.'
                'weight',
                'side_adapter_network.fusion_layers.layer_1.input_proj.1.'
                'bias', 'side_adapter_network.proj.2.weight',
                'side_linear.weight', 'neck.fusion5.multihead_attn.'
                'in_proj_weight', 'proj.vis.4.weight'):
        assert key in upstream, key
    upstream['backbone.logit_scale'] = torch.tensor(4.6)
    src, dst = tmp_path / 'best_model.pth', tmp_path / 'barleria_ris.pth'
    train_py_file(src, upstream, [torch.nn.Parameter(torch.ones(2))])
    monkeypatch.setattr(sys, 'argv',
                        ['barleria_to_ris.py', str(src), str(dst)])
    conv.main()
    converted = torch.load(dst, map_location='cpu',
                           weights_only=True)['state_dict']
    fresh = demo_model()
    load_state_dict_strict(fresh, converted, 'barleria')
    ds = token_samples(tokens(6, 4, total=17), size=160)
    img = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        want = model(img, *text_of(ds))
        assert torch.isfinite(want).all() and want.std() > 0
        torch.testing.assert_close(fresh.eval()(img, *text_of(ds)),
                                   want, rtol=0, atol=0)


def test_flow_alias_must_equal_its_parameter():
    conv = converter()
    upstream = conv.to_upstream_barleria(demo_model().state_dict())
    key = 'backbone.transformer.resblocks.0.flow.log_jacobians.2.scale'
    upstream[key] = upstream[key] + 1
    with pytest.raises(ValueError, match='log_jacobians.2.scale.*differs'):
        conv.convert_barleria(upstream, 'evil.pth')
    upstream = conv.to_upstream_barleria(demo_model().state_dict(),
                                         with_aliases=False)
    assert not [k for k in upstream if 'log_jacobians' in k]
    conv.convert_barleria(upstream)  # aliases are optional


def test_resnet_checkpoint_is_refused():
    with pytest.raises(KeyError, match='x.pth: BarLeRIa is released for '
                       'CLIP ViT only'):
        converter().convert_barleria(
            {'backbone.visual.attnpool.positional_embedding':
             torch.zeros(2, 2)}, 'x.pth')


@pytest.mark.slow
@pytest.mark.parametrize('variant', sorted(FULL))
def test_full_config_key_coverage(variant):
    """Every key of the full model has an official name and converts back
    to itself; the release (no vision -> text LIM) has no
    intertwiner.proj_txt (builds the full model on the CPU: GSTSideNet
    cannot be built on the meta device)."""
    cu = load_tool('model_converters/converter_utils.py')
    conv = converter()
    state = cu.build_model(FULL[variant]).state_dict()
    upstream = conv.to_upstream_barleria(state)
    flows = [k for k in upstream if '.flow' in k and '.transforms.' in k]
    assert len(flows) == 2 * 24 * 4 * 3  # 2 flows x 24 blocks x K 4 x 3
    assert upstream['side_adapter_network.vit_model.pos_embed'].shape == (
        1, 676, 144)
    assert ('intertwiner.proj_txt.0.weight' in upstream) == (
        variant == 'default')
    back = conv.convert_barleria(upstream)
    assert {k: v.shape for k, v in back.items()} == {
        k: v.shape for k, v in state.items()}
