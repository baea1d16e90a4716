"""tools/model_converters/cris_to_ris.py: a CRIS train.py checkpoint
(DerrickWang005/CRIS.pytorch: 'state_dict' of the DDP model, module.-prefixed
backbone.* / neck.* / decoder.* / proj.* keys, with optimizer / scheduler
state) converts into our CRIS model with identical outputs."""
import os.path as osp
import sys

import pytest
import torch

from ris_plugins.utils.state_dict import load_state_dict_strict

from ..conftest import (ROOT, load_tool, text_of, tiny_cris, token_samples,
                        tokens, train_py_file)

# Official names (model/segmenter.py, model/layers.py, model/clip.py) and
# the shapes they have in the tiny model (RN width 8, text width 32,
# FPN out (16, 32, 48), decoder width 32, projector 16).
OFFICIAL = {
    'backbone.visual.conv1.weight': (4, 3, 3, 3),
    'backbone.visual.attnpool.connect.0.weight': (48, 256, 1, 1),
    'backbone.visual.attnpool.connect.1.running_var': (48, ),
    'backbone.transformer.resblocks.1.attn.in_proj_weight': (96, 32),
    'backbone.text_projection': (32, 48),
    'backbone.positional_embedding': (77, 32),
    'neck.txt_proj.0.weight': (48, 48),
    'neck.txt_proj.1.running_mean': (48, ),
    'neck.f1_v_proj.0.weight': (48, 48, 1, 1),
    'neck.norm_layer.0.weight': (48, ),
    'neck.f2_v_proj.0.weight': (32, 128, 3, 3),
    'neck.f2_cat.0.weight': (32, 80, 1, 1),
    'neck.f3_v_proj.1.bias': (16, ),
    'neck.f3_cat.0.weight': (32, 48, 1, 1),
    'neck.f4_proj5.0.weight': (32, 48, 3, 3),
    'neck.f4_proj3.0.weight': (32, 32, 3, 3),
    'neck.aggr.0.weight': (32, 96, 1, 1),
    'neck.coordconv.0.conv1.0.weight': (32, 34, 3, 3),
    'neck.coordconv.1.1.weight': (32, ),
    'decoder.layers.0.self_attn.in_proj_weight': (96, 32),
    'decoder.layers.0.multihead_attn.out_proj.weight': (32, 32),
    'decoder.layers.0.self_attn_norm.weight': (32, ),
    'decoder.layers.0.ffn.3.weight': (64, ),
    'decoder.layers.0.norm3.bias': (32, ),
    'decoder.norm.weight': (32, ),
    'proj.vis.1.0.weight': (32, 32, 3, 3),
    'proj.vis.3.1.running_mean': (16, ),
    'proj.vis.4.weight': (16, 16, 1, 1),
    'proj.txt.weight': (145, 48),
}


def converter():
    return load_tool('model_converters/cris_to_ris.py')


def test_official_layout_names_and_shapes():
    upstream = converter().to_upstream_cris(tiny_cris().state_dict())
    for key, shape in OFFICIAL.items():
        assert tuple(upstream[key].shape) == shape, key
    assert not [k for k in upstream if k.startswith(
        ('fusion.', 'decode_head.', 'text_encoder.'))]


def test_round_trip_gives_identical_outputs(tmp_path, monkeypatch):
    conv = converter()
    model = tiny_cris().eval()
    upstream = conv.to_upstream_cris(model.state_dict())
    upstream['backbone.logit_scale'] = torch.tensor(4.6)  # CLIP's, dropped
    src, dst = tmp_path / 'best_model.pth', tmp_path / 'cris_ris.pth'
    train_py_file(src, upstream, [torch.nn.Parameter(torch.ones(2))])
    monkeypatch.setattr(sys, 'argv', ['cris_to_ris.py', str(src), str(dst)])
    conv.main()
    state = torch.load(dst, map_location='cpu', weights_only=True)
    fresh = tiny_cris()
    for p in fresh.parameters():
        torch.nn.init.normal_(p)
    load_state_dict_strict(fresh, state['state_dict'], str(dst))
    fresh.eval()
    img, ds = torch.randn(2, 3, 64, 64), token_samples(
        tokens(6, 4), ori=(48, 64), pad=(0, 0, 8, 8))
    with torch.no_grad():
        torch.testing.assert_close(fresh(img, *text_of(ds)),
                                   model(img, *text_of(ds)),
                                   rtol=0, atol=0)


def test_errors_name_the_file_and_key(tmp_path):
    conv = converter()
    upstream = conv.to_upstream_cris(tiny_cris().state_dict())
    src = tmp_path / 'odd.pth'
    train_py_file(src, {**upstream, 'neck.mystery.weight': torch.ones(1)},
                  [torch.nn.Parameter(torch.ones(1))])
    with pytest.raises(KeyError, match="odd.pth.*'neck.mystery.weight'"):
        conv.convert_file(str(src))
    other = tmp_path / 'other.pth'
    torch.save({'model': upstream}, other)
    with pytest.raises(KeyError, match="other.pth: no 'state_dict'.*"
                       r"\['model'\]"):
        conv.convert_file(str(other))


@pytest.mark.parametrize('config', [
    'cris_r50_8xb8-50e_refcoco-416x416.py',
    'cris_r101_8xb8-50e_refcoco-416x416.py'
])
def test_full_config_key_coverage(config):
    """Every key of the full model has an official name and converts
    back to itself (names and shapes only: built on the meta device)."""
    cu = load_tool('model_converters/converter_utils.py')
    conv = converter()
    model = cu.build_model(osp.join(ROOT, 'configs', 'cris', config),
                           meta=True)
    state = model.state_dict()
    upstream = conv.to_upstream_cris(state)
    # CLIP packs q, k, v: 3 weights + 3 biases -> 2 per text layer (12).
    assert len(upstream) == len(state) - 4 * 12
    assert 'backbone.visual.layer4.2.bn3.weight' in upstream
    assert upstream['neck.f1_v_proj.0.weight'].shape[0] == 1024  # O5
    back = conv.convert_cris(upstream)
    assert {k: v.shape for k, v in back.items()} == {
        k: v.shape for k, v in state.items()}
