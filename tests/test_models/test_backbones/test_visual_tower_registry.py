"""DualEncoderBackbone's open set of visual towers (a driver registered per
tower class, ``register_visual_tower``) and the tower-adapter protocol (one
spelling of each width: ``visual_dim`` / ``text_dim``)."""
import pytest
import torch
from mmengine.model import BaseModule

from mmseg.registry import MODELS
from ris_plugins.models import BridgerRN, BridgerViT, GSTSideNet, LIMPrompts
from ris_plugins.models.adapters import SNF
from ris_plugins.models.backbones import (VISUAL_TOWER_DRIVERS, CLIPViT,
                                          register_visual_tower)
from ris_plugins.models.backbones._dual_encoder.vit_tower import ViTTower

SOT, EOT = 49406, 49407
VIT_ARGS = dict(arch=dict(embed_dims=32, num_layers=4, num_heads=4,
                          feedforward_channels=64),
                img_size=64, patch_size=16, output_dim=16)
TEXT = dict(type='RefCLIPTextEncoder', context_length=8,
            config=dict(hidden_size=24, intermediate_size=48,
                        num_hidden_layers=4, num_attention_heads=2,
                        projection_dim=20))
BRIDGER = dict(type='BridgerViT', visual_dim=32, text_dim=24, dim=8,
               num_heads=2, num_stages=2)


class WrappedViT(BaseModule):
    """A visual tower that is not a CLIPViT: it holds one (``.vit``)."""

    def __init__(self, **kwargs):
        super().__init__()
        self.vit = CLIPViT(**kwargs)


class WrappedViTTower:
    """Driver of :class:`WrappedViT`: ViTTower on the inner ViT; counts the
    blocks it runs."""
    layout = 'tokens'
    vis_prefix = 1
    blocks_run = 0

    @staticmethod
    def widths(tower):
        return ViTTower.widths(tower.vit)

    @staticmethod
    def embed(tower, img):
        return ViTTower.embed(tower.vit, img)

    @staticmethod
    def run_block(tower, state, i, shortcuts):
        WrappedViTTower.blocks_run += 1
        ViTTower.run_block(tower.vit, state, i, shortcuts)

    @staticmethod
    def tap(state):
        return ViTTower.tap(state)

    @staticmethod
    def levels(tower, state, taps):
        return ViTTower.levels(tower.vit, state, taps)


class PerPoint(torch.nn.Module):
    """An adapter declaring one visual width per hook point; identity."""

    def __init__(self, visual_dim, text_dim=24):
        super().__init__()
        self.visual_dim, self.text_dim = tuple(visual_dim), text_dim

    def forward(self, step, vis, txt, pad_mask=None, prev=None):
        return vis, txt, None


@pytest.fixture
def wrapped_tower():
    """Register WrappedViT (MODELS) and its driver; undo both after."""
    MODELS.register_module('TestWrappedViT', module=WrappedViT, force=True)
    register_visual_tower(WrappedViT)(WrappedViTTower)
    yield
    VISUAL_TOWER_DRIVERS.pop(WrappedViT, None)
    MODELS._module_dict.pop('TestWrappedViT', None)


def tokens(*lengths, total=8):
    out = torch.zeros(len(lengths), total, dtype=torch.long)
    for b, n in enumerate(lengths):
        out[b, 0] = SOT
        out[b, 1:n - 1] = torch.arange(n - 2) * 97 + 300 + b
        out[b, n - 1] = EOT
    return out


def backbone(visual: dict, **kw):
    torch.manual_seed(0)
    cfg = dict(type='DualEncoderBackbone', visual=visual, text=TEXT,
               interactions=[dict(after=[(2, 2), (4, 4)], module=BRIDGER)],
               visual_taps=(2, ))
    cfg.update(kw)
    return MODELS.build(cfg)


def test_registered_tower_runs_through_its_driver(wrapped_tower):
    """A tower class the runner did not know is added by registering a
    driver, without editing the runner: with the same weights it gives
    exactly the CLIPViT tower's outputs, through the new driver."""
    ref = backbone(dict(type='CLIPViT', **VIT_ARGS)).eval()
    new = backbone(dict(type='TestWrappedViT', **VIT_ARGS)).eval()
    state = {(k.replace('visual.', 'visual.vit.', 1)
              if k.startswith('visual.') else k): v
             for k, v in ref.state_dict().items()}
    new.load_state_dict(state, strict=True)
    WrappedViTTower.blocks_run = 0
    img, tok = torch.randn(2, 3, 64, 64), tokens(5, 8)
    with torch.no_grad():
        a, b = ref(img, tok), new(img, tok)
    assert WrappedViTTower.blocks_run == 4  # every block via the driver
    assert len(a.visual) == len(b.visual) == 2
    for x, y in zip(a.visual, b.visual):
        assert torch.equal(x, y)
    assert torch.equal(a.text.word_feats, b.text.word_feats)
    # Frozen as any tower: only the positional embeddings train.
    trainable = [n for n, p in new.visual.named_parameters()
                 if p.requires_grad]
    assert trainable == ['vit.pos_embed']


def test_subclass_of_registered_tower_uses_its_parent_driver():

    class MyViT(CLIPViT):
        pass

    MODELS.register_module('TestMyViT', module=MyViT, force=True)
    try:
        bb = backbone(dict(type='TestMyViT', **VIT_ARGS))
        assert bb._tower is ViTTower
    finally:
        MODELS._module_dict.pop('TestMyViT', None)


def test_unregistered_tower_is_refused_naming_the_registered_ones():
    MODELS.register_module('TestWrappedViT', module=WrappedViT, force=True)
    try:
        with pytest.raises(TypeError,
                           match=r"no driver for the visual tower "
                           r"WrappedViT; registered towers: "
                           r"\['CLIPResNet', 'CLIPViT'\]"):
            backbone(dict(type='TestWrappedViT', **VIT_ARGS))
    finally:
        MODELS._module_dict.pop('TestWrappedViT', None)


def test_bad_driver_registrations():

    class NoLevels:
        layout, vis_prefix = 'tokens', 1
        widths = embed = run_block = tap = staticmethod(lambda *a: None)

    with pytest.raises(TypeError, match=r"NoLevels .* lacks \['levels'\]"):
        register_visual_tower(WrappedViT)(NoLevels)

    class BadLayout(WrappedViTTower):
        layout = 'sequence'

    with pytest.raises(TypeError, match=r"layout='sequence'; valid: "
                       r"\('tokens', 'map'\)"):
        register_visual_tower(WrappedViT)(BadLayout)
    with pytest.raises(KeyError, match='CLIPViT already has the driver '
                       'ViTTower; pass force=True'):
        register_visual_tower(CLIPViT)(WrappedViTTower)
    assert VISUAL_TOWER_DRIVERS[CLIPViT] is ViTTower
    assert WrappedViT not in VISUAL_TOWER_DRIVERS


@pytest.mark.parametrize('adapter', [
    lambda: BridgerViT(visual_dim=32, text_dim=24, dim=8, num_heads=2),
    lambda: BridgerRN(visual_dim=(8, 16, 32), text_dim=12, d_model=8,
                      num_heads=2, ffn_dim=16),
    lambda: LIMPrompts(visual_dim=32, text_dim=24, hidden_dim=8),
    lambda: SNF(visual_dim=32, text_dim=24, visual_layers=2,
                text_layers=2),
    lambda: GSTSideNet(visual_dim=32, text_dim=24, width=12, depth=2,
                       num_heads=2, num_queries=4,
                       fusion_map=((1, 0), (2, 1)), grid=4, out_dim=8),
])
def test_tower_adapters_declare_one_spelling_of_each_width(adapter):
    """Every tower adapter exposes the widths it was built for as
    ``visual_dim`` / ``text_dim`` and no second spelling."""
    module = adapter()
    assert module.text_dim in (12, 24)
    assert module.visual_dim in (32, (8, 16, 32))
    for old in ('vis_dims', 'vis_dim', 'txt_dim', 'clip_dim', 'dims'):
        assert not hasattr(module, old), old


def test_protocol_widths_are_checked_at_build():
    # A per-hook-point visual_dim with one width too few, and a wrong one.
    MODELS.register_module('TestPerPoint', module=PerPoint, force=True)
    try:
        with pytest.raises(ValueError, match=r'PerPoint.visual_dim has 2 '
                           r'widths but the module is hooked at 3 points'):
            backbone(dict(type='CLIPViT', **VIT_ARGS), interactions=[dict(
                after=[(1, 1), (2, 2), (3, 3)],
                module=dict(type='TestPerPoint', visual_dim=(32, 32)))])
        with pytest.raises(ValueError, match=r'PerPoint.visual_dim\[1\]=30 '
                           r'does not match the visual tower width 32 at '
                           r'hook point \(2, 2\)'):
            backbone(dict(type='CLIPViT', **VIT_ARGS), interactions=[dict(
                after=[(1, 1), (2, 2)],
                module=dict(type='TestPerPoint', visual_dim=(32, 30)))])
    finally:
        MODELS._module_dict.pop('TestPerPoint', None)
    # The side network's visual width against the tapped blocks.
    with pytest.raises(ValueError, match=r'side_net.visual_dim=48 does not '
                       r'match the visual tower width 32 at visual block 1'):
        backbone(dict(type='CLIPViT', **VIT_ARGS), interactions=[],
                 side_net=dict(type='GSTSideNet', visual_dim=48,
                               text_dim=24, width=12, depth=2, num_heads=2,
                               num_queries=4, fusion_map=((1, 0), (2, 1)),
                               grid=4, out_dim=8))
