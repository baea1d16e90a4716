# Tiny RefShapes variant of mix (b) (DualEncoderBackbone with SNF + LIM ->
# FeatureAdapter -> QueryMaskHead) on the BarLeRIa-small demo's tiny
# randomly initialised frozen CLIP towers (width 64, 6 blocks each; levels
# after blocks 2 / 4 and the final map, all 10 x 10 at 160). The adapter
# sums the three levels projected to 64 and projects the words 64 -> 64;
# 1-layer decoder, logits 40 x 40. Trained only a few iterations in CI
# (tests/test_engine/test_mix_configs.py); no numbers are claimed.
_base_ = [
    '../demo/barleria-small_tiny-vit-clip_1xb16-2k_refshapes-160x160.py'
]
dims = 64
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(side_net=None),
    fusion=dict(
        _delete_=True,
        type='FeatureAdapter',
        in_channels=[64, 64, 64],
        out_channels=dims,
        merge='sum',
        text_channels=64,
        text_out_channels=dims,
        norm_cfg=norm_cfg,
        act_cfg=dict(type='ReLU')),
    decode_head=dict(
        _delete_=True,
        type='QueryMaskHead',
        in_channels=dims,
        channels=32,
        num_layers=1,
        num_heads=4,
        ffn_channels=4 * dims,
        decoder_dropout=0.0,
        num_mlp_layers=2,
        norm_cfg=norm_cfg))
val_evaluator = dict(type='RefSegMetric', threshold=0.5, pr_op='>')
test_evaluator = val_evaluator
