"""BridgerViT (ETRIS's adapter between ViT blocks)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ris_plugins.models import BridgerViT

from ...conftest import n_params


def test_bridger_vit_full_size_parameter_count():
    bridger = BridgerViT()  # ViT-B/16: 768, text 512, d 64, 8 heads
    assert n_params(bridger) == 598_592  # ris_methods.md 3.2
    assert bridger.stage_params == [199_360, 199_616, 199_616]


def test_bridger_stage_updates():
    """Visual residual >= 0 (zoom-out ends in ReLU), zero text-out keeps the
    text, the ladder state is needed after stage 0 and only patches change
    inside the runner (CLS is left alone)."""
    torch.manual_seed(0)
    br = BridgerViT(visual_dim=32, text_dim=24, dim=8, num_heads=2,
                    num_stages=2).eval()
    nn.init.zeros_(br.stages[0].text_out.weight)
    nn.init.zeros_(br.stages[0].text_out.bias)
    vis, txt = torch.randn(2, 32, 3, 4), torch.randn(2, 5, 24)
    v, t, ladder = br(0, vis, txt)
    assert v.shape == vis.shape and t.shape == txt.shape
    assert bool((v - vis >= 0).all()) and bool((v != vis).any())
    torch.testing.assert_close(t, txt)
    assert ladder[0].shape == (12, 2, 8) and ladder[1].shape == (5, 2, 8)
    with pytest.raises(ValueError, match='needs the ladder state'):
        br(1, vis, txt)
    with pytest.raises(ValueError, match='visual width 32 and text width '
                       '24, got 16 and 24'):
        br(0, torch.randn(2, 16, 3, 4), txt)
    # The ladder adds the previous stage's state before its LayerNorm.
    v1, _, (lv, lt) = br(1, vis, txt, prev=ladder)
    stage = br.stages[1]
    want = stage.ladder_v(
        stage.zoom_in(vis).flatten(2).permute(2, 0, 1) + ladder[0])
    torch.testing.assert_close(lv, want)


def test_bridger_gated_attention_matches_functional_mha():
    """v' = v * MHA(v; t): check against torch's functional MHA with the
    module's weights (an independent attention implementation path)."""
    torch.manual_seed(0)
    br = BridgerViT(visual_dim=32, text_dim=24, dim=8, num_heads=2,
                    num_stages=1)
    gate = br.stages[0].fuse_v
    q, kv = torch.randn(6, 2, 8), torch.randn(4, 2, 8)
    mha = gate.attn
    ref = F.multi_head_attention_forward(
        q, kv, kv, 8, 2, mha.in_proj_weight, mha.in_proj_bias, None, None,
        False, 0.0, mha.out_proj.weight, mha.out_proj.bias,
        training=False, need_weights=False)[0]
    torch.testing.assert_close(gate(q, kv), q * ref)
