"""SAMViT (HARIS's frozen SAM image encoder): taps, neck, freezing and bad
taps."""
import pytest
import torch
import torch.nn as nn
from mmpretrain.models.backbones import ViTSAM

from mmseg.registry import MODELS
from ris_plugins.models.backbones.sam_vit import SAMViT

from ...conftest import TINY_SAM


def tiny_sam(**kw) -> SAMViT:
    cfg = dict(type='SAMViT', arch=TINY_SAM, img_size=32, patch_size=8,
               window_size=2, out_channels=8)
    cfg.update(kw)
    model = MODELS.build(cfg)
    torch.manual_seed(0)
    nn.init.normal_(model.pos_embed, std=0.5)  # non-zero absolute table
    return model


def test_sam_default_taps_shapes_and_neck_at_other_input_size():
    model = tiny_sam()
    assert model.out_indices == [1, 3]  # the global-attention blocks
    outs = model(torch.randn(2, 3, 48, 40))  # grid 6 x 5, table is 4 x 4
    assert [o.shape for o in outs] == [(2, 32, 6, 5)] * 2
    neck = tiny_sam(out_indices=(0, 2, -1), neck_as_deep=True)
    outs = neck(torch.randn(1, 3, 32, 32))
    assert [o.shape[1] for o in outs] == [32, 32, 8]
    assert neck.feat_channels == (32, 32, 8)


def test_sam_taps_match_mmpretrain_vitsam():
    """Taps equal mmpretrain's own ViTSAM forward with the same weights
    (raw blocks: out_channels=0; neck: ViTSAM's last-block output)."""
    model = tiny_sam(out_indices=(0, 1, 3), neck_as_deep=True)
    x = torch.randn(1, 3, 40, 40)  # not the 32 of the tables
    outs = model(x)
    raw = ViTSAM(arch=TINY_SAM, img_size=32, patch_size=8, window_size=2,
                 out_channels=0, out_indices=[0, 1, 3])
    raw.eval()  # mmpretrain's train() returns None: no chaining
    raw.load_state_dict({k: v for k, v in model.state_dict().items()
                         if not k.startswith('channel_reduction')})
    ref = raw(x)
    torch.testing.assert_close(outs[0], ref[0])
    torch.testing.assert_close(outs[1], ref[1])
    necked = ViTSAM(arch=TINY_SAM, img_size=32, patch_size=8, window_size=2,
                    out_channels=8, out_indices=[3])
    necked.eval()
    necked.load_state_dict(model.state_dict())
    torch.testing.assert_close(outs[2], necked(x)[0])


def test_sam_frozen_and_eval():
    model = tiny_sam()
    assert not any(p.requires_grad for p in model.parameters())
    assert model.train() is model and not model.training
    out = model(torch.randn(1, 3, 32, 32))[0]
    assert not out.requires_grad
    trainable = tiny_sam(frozen=False).train()
    assert trainable.training
    assert all(p.requires_grad for p in trainable.parameters())


@pytest.mark.parametrize('kw, match', [
    (dict(out_indices=(1, 4)), 'outside the encoder depth'),
    (dict(out_indices=(-5, )), 'outside the encoder depth'),
    (dict(out_indices=(3, 1)), 'increasing'),
    (dict(out_indices=(1, 2), neck_as_deep=True), 'final block'),
    (dict(out_type='avg_featmap'), 'featmap'),
])
def test_sam_bad_taps(kw, match):
    with pytest.raises(ValueError, match=match):
        tiny_sam(**kw)
