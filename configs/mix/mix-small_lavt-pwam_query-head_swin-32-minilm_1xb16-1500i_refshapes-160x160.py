# Tiny RefShapes variant of mix (c) (MultiModalSwin with PWAM ->
# FeatureAdapter -> QueryMaskHead) on the LAVT-small demo: Swin width 32,
# depths 2-2-2-2 (levels 32 / 64 / 128 / 256 at 40 / 20 / 10 / 5 for 160
# input), frozen pretrained all-MiniLM-L6-v2 words (384). The adapter
# projects every level to 64, resizes them to the 10 x 10 grid, sums them
# and projects the words 384 -> 64; 1-layer decoder, logits 40 x 40.
# Trained only a few iterations in CI (tests/test_engine/
# test_mix_configs.py); no numbers are claimed.
_base_ = [
    '../demo/lavt-small_swin-32-minilm_1xb16-1500i_refshapes-160x160.py'
]
dims = 64
model = dict(
    fusion=dict(
        _delete_=True,
        type='FeatureAdapter',
        in_channels=[32, 64, 128, 256],
        out_channels=dims,
        resize_to=2,
        merge='sum',
        text_channels=384,
        text_out_channels=dims,
        norm_cfg={{_base_.norm_cfg}},
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
        norm_cfg={{_base_.norm_cfg}}))
val_evaluator = dict(type='RefSegMetric', threshold=0.5, pr_op='>')
test_evaluator = val_evaluator
