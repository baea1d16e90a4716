# Tiny RefShapes variant of mix (a) (HierarchicalHLA -> FeatureAdapter x2
# -> CRISHead) on the CRIS-small demo (configs/demo/cris-small_*): tiny
# random CLIP ResNet (levels 128 / 256 / 128 at 20 / 10 / 5 pixels for
# 160 input), frozen pretrained all-MiniLM-L6-v2 (words and sentence 384
# wide). HLA width 64, stride-2 injection: M_3 is 5 x 5, upsampled to 10 x
# 10 by the adapter; logits 40 x 40. Trained only a few iterations in CI
# (tests/test_engine/test_mix_configs.py); no numbers are claimed.
_base_ = ['../demo/cris-small_tiny-rn-minilm_1xb16-2k_refshapes-160x160.py']
dims = 64
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    fusion=dict(
        _delete_=True,
        type='HierarchicalHLA',
        in_channels=[128, 256, 128],
        text_channels=384,
        sent_channels=384,
        embed_dims=dims,
        stride=2,
        norm_cfg=norm_cfg),
    neck=dict(type='FeatureAdapter', in_channels=dims, scale_factor=2.0),
    decode_head=dict(in_channels=dims, text_channels=dims))
