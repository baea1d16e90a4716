# A tiny CRIS trained from scratch on RefShapes at 160x160 on CPU: CLIP
# ResNet widths / 4 with one Bottleneck per stage, a 2-layer CLIP text
# transformer of width 64, the CRIS neck and a 1-layer decoder (same
# architecture as configs/cris, randomly initialised). Dataset, runtime and
# the 2k-iteration AdamW schedule are the baseline demo's.
_base_ = [
    '../_base_/models/cris_r50.py', '../_base_/datasets/refshapes.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_2k_adamw.py'
]
img_scale = (160, 160)
context_length = 17
pad_val = (104.09373615, 116.7460125, 122.7709383)  # CLIP mean, BGR
tokenizer = dict(
    type='TokenizeText', tokenizer='clip', context_length=context_length)
meta_keys = {{_base_.meta_keys}}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadRefMask'),
    dict(type='RefRandomFlip', prob=0.5),
    dict(type='Letterbox', scale=img_scale, pad_val=pad_val),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Letterbox', scale=img_scale, pad_val=pad_val),
    dict(type='LoadRefMask'),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=16, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='RefSegMetric', threshold=0.35, pr_op='>')
test_evaluator = val_evaluator
tiny_text = dict(
    hidden_size=64,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=2,
    projection_dim=128)
model = dict(
    data_preprocessor=dict(size=img_scale),
    # strides 8 / 16 / 32: 128 / 256 / 128 channels (20 / 10 / 5 at 160).
    backbone=dict(
        base_channels=16,
        stage_blocks=(1, 1, 1, 1),
        num_attn_heads=8,
        output_dim=128),
    text_encoder=dict(context_length=context_length, config=tiny_text),
    fusion=dict(
        in_channels=[128, 256, 128],
        out_channels=[32, 64, 128],
        text_channels=128),
    # Decoder width = word width (64); logits 40 x 40.
    decode_head=dict(
        in_channels=64,
        channels=32,
        sent_channels=128,
        num_layers=1,
        num_heads=4,
        ffn_channels=128))
randomness = dict(seed=0)
