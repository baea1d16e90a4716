# A small HARIS for RefShapes at 160x160 on CPU, built from the HARIS
# modules with tiny random encoders (no SAM / CLIP weights offline): a
# SAM-style ViT (width 64, 6 blocks, patch 16, windows 5 x 5, global
# attention in blocks 1 / 3 / 5, relative positions, 64-d neck) and a
# 2-layer width-64 CLIP text tower, both frozen as in HARIS, so only the
# hierarchical HLA fusion (width 64) and the 1-layer query-token decoder
# train. Taps: the default (the global-attention blocks). 10 x 10 tokens,
# logits 40 x 40 (patch 8 makes the global blocks 16x dearer). Dataset,
# runtime and the 2k-iteration AdamW schedule are the baseline demo's.
_base_ = [
    '../_base_/models/haris_sam-vit-b_clip.py',
    '../_base_/datasets/refshapes_clip-160.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_2k_adamw.py'
]
pad_val = (103.53, 116.28, 123.675)  # SAM's mean, BGR
train_pipeline = [
    dict(t, pad_val=pad_val) if t.type == 'Letterbox' else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, pad_val=pad_val) if t.type == 'Letterbox' else t
    for t in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(threshold=0.5)
test_evaluator = val_evaluator
dims = 64
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=dims,
            num_layers=6,
            num_heads=4,
            feedforward_channels=4 * dims,
            global_attn_indexes=[1, 3, 5]),
        img_size=_base_.img_scale[0],
        patch_size=16,
        window_size=5,
        out_indices=None,
        out_channels=dims),
    text_encoder=dict(
        context_length=_base_.context_length,
        config=dict(
            hidden_size=dims,
            intermediate_size=4 * dims,
            num_hidden_layers=2,
            num_attention_heads=4,
            projection_dim=dims)),
    fusion=dict(
        in_channels=[dims] * 3,
        text_channels=dims,
        sent_channels=dims,
        embed_dims=dims),
    decode_head=dict(
        in_channels=dims,
        channels=32,
        num_layers=1,
        num_heads=4,
        ffn_channels=4 * dims,
        decoder_dropout=0.0,
        num_mlp_layers=2))
randomness = dict(seed=0)
