# HARIS with SAM ViT-B + CLIP ViT-B/16 text on RefCOCO (UNC): 480x480
# letterbox padded with SAM's mean [R] (the paper gives no input size; SAM's
# 1024 tables are resized to 30 x 30), CLIP BPE to 17 tokens, batch 16,
# Adam 1e-4 (no weight decay) [R: lr], 50 epochs with x0.1 at epoch 30,
# mIoU / oIoU / Pr@X at the original resolution with sigmoid > 0.5 [R].
# Only the fusion and the mask decoder train (SAM and CLIP are frozen).
# See configs/_base_/models/haris_sam-vit-b_clip.py for the weights.
_base_ = [
    '../_base_/models/haris_sam-vit-b_clip.py',
    '../_base_/datasets/refcoco_unc.py', '../_base_/default_runtime.py'
]
img_scale = (480, 480)
context_length = 17
pad_val = (103.53, 116.28, 123.675)  # SAM's mean, BGR
tokenizer = dict(
    type='TokenizeText', tokenizer='clip', context_length=context_length)
meta_keys = {{_base_.meta_keys}}
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadRefMask'),
    dict(type='Letterbox', scale=img_scale, pad_val=pad_val),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
# The mask is loaded after the letterbox: IoU at the original resolution.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Letterbox', scale=img_scale, pad_val=pad_val),
    dict(type='LoadRefMask'),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=16,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, dataset=dict(sentence_mode='first',
                               pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1, dataset=dict(sentence_mode='all', pipeline=test_pipeline))
val_evaluator = dict(type='RefSegMetric', threshold=0.5)
test_evaluator = val_evaluator
model = dict(
    data_preprocessor=dict(size=img_scale),
    backbone=dict(img_size=img_scale[0]),
    text_encoder=dict(context_length=context_length))
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0))
max_epochs = 50
param_scheduler = [
    dict(
        type='MultiStepLR',
        by_epoch=True,
        begin=0,
        end=max_epochs,
        milestones=[30],
        gamma=0.1)
]
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
log_processor = dict(by_epoch=True)
default_hooks = dict(
    logger=dict(interval=50, log_metric_by_epoch=True),
    checkpoint=dict(
        by_epoch=True, interval=1, max_keep_ckpts=1, save_best='mIoU',
        rule='greater'))
