# HARIS with SAM ViT-B + CLIP ViT-B/16 text on RefCOCO (UNC): 480x480
# letterbox padded with SAM's mean [R] (the paper gives no input size; SAM's
# 1024 tables are resized to 30 x 30), CLIP BPE to 17 tokens, batch 16,
# Adam 1e-4 (no weight decay) [R: lr], 50 epochs with x0.1 at epoch 30,
# mIoU / oIoU / Pr@X at the original resolution with sigmoid > 0.5 [R].
# Only the fusion and the mask decoder train (SAM and CLIP are frozen).
# See configs/_base_/models/haris_sam-vit-b_clip.py for the weights.
_base_ = [
    '../_base_/models/haris_sam-vit-b_clip.py',
    '../_base_/datasets/refcoco_unc_clip-416.py',
    '../_base_/schedules/schedule_50e_adam_step35.py'
]
# The CLIP-based RIS data setting with the letterbox at 480 and padded
# with SAM's mean (the padding becomes 0 after normalisation).
img_scale = (480, 480)
pad_val = (103.53, 116.28, 123.675)  # SAM's mean, BGR
train_pipeline = [
    dict(t, scale=img_scale, pad_val=pad_val) if t.type == 'Letterbox' else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, scale=img_scale, pad_val=pad_val) if t.type == 'Letterbox' else t
    for t in _base_.test_pipeline
]
train_dataloader = dict(batch_size=16, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
val_evaluator = dict(_delete_=True, type='RefSegMetric', threshold=0.5)
test_evaluator = dict(_delete_=True, type='RefSegMetric', threshold=0.5)
model = dict(
    data_preprocessor=dict(size=img_scale),
    backbone=dict(img_size=img_scale[0]),
    text_encoder=dict(context_length=_base_.context_length))
# One GPU, no AMP; x0.1 at epoch 30; only the best checkpoint is kept.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0))
param_scheduler = [dict(_base_.param_scheduler[0], milestones=[30])]
default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))
