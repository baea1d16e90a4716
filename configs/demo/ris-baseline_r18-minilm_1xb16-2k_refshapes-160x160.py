# The demo: the foundation baseline trained on RefShapes at 160x160 on CPU.
_base_ = [
    '../_base_/models/ris_baseline_r18_minilm.py',
    '../_base_/datasets/refshapes.py', '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_2k_adamw.py'
]
img_scale = (160, 160)
tokenizer = {{_base_.tokenizer}}
meta_keys = {{_base_.meta_keys}}
load_image = {{_base_.load_image}}
train_pipeline = [
    load_image,
    dict(type='LoadRefMask'),
    dict(type='RefRandomFlip', prob=0.5),
    dict(type='Letterbox', scale=img_scale),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    load_image,
    dict(type='Letterbox', scale=img_scale),
    dict(type='LoadRefMask'),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=16, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
model = dict(data_preprocessor=dict(size=img_scale))
randomness = dict(seed=0)
