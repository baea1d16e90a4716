# ETRIS with frozen CLIP RN50 on RefCOCO (UNC): 416x416 letterbox (padded
# with CLIP's mean), CLIP BPE to 17 tokens, no augmentation, batch 8 GPUs x
# 4 = 32, Adam 1e-4 for every trainable parameter (no weight decay), 50
# epochs with x0.1 at epoch 35, mIoU and Pr@X (IoU > X) at the original
# resolution with sigmoid > 0.35 (upstream config/refcoco/bridge_r50.yaml).
# See configs/_base_/models/etris_r50.py for the model, the frozen-BN and
# `connect` choices and loading CLIP weights.
#
# Only the Bridger, the HA neck, the GA decoder, the projector and the two
# positional embeddings train: the towers' other parameters have
# requires_grad=False (DualEncoderBackbone), so mmengine's default optimizer
# constructor gives them no updates; no paramwise_cfg is needed because
# every trainable parameter uses the base lr (ETRIS: lr_multi 1).
#
# Differences from upstream: the frozen RN tower is kept in eval mode (its
# BatchNorm running statistics stay CLIP's; upstream's keep updating); the
# Bridger masks padding words (mask_padding=True); the train mask is
# letterboxed with nearest interpolation; no cudnn.enabled=False.
_base_ = [
    '../_base_/models/etris_r50.py', '../_base_/datasets/refcoco_unc.py',
    '../_base_/default_runtime.py'
]
img_scale = (416, 416)
context_length = 17
# CLIP's mean in BGR order: the padding becomes 0 after normalisation.
pad_val = (104.09373615, 116.7460125, 122.7709383)
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
# One random sentence per ref per epoch (sentence_mode='random').
train_dataloader = dict(
    batch_size=4,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(pipeline=train_pipeline))
# Validation on the first sentence of each ref, test on all (as CRIS).
val_dataloader = dict(
    batch_size=1, dataset=dict(sentence_mode='first',
                               pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1, dataset=dict(sentence_mode='all', pipeline=test_pipeline))
val_evaluator = dict(type='RefSegMetric', threshold=0.35, pr_op='>')
test_evaluator = val_evaluator
model = dict(
    data_preprocessor=dict(size=img_scale),
    backbone=dict(text=dict(context_length=context_length)))
# ETRIS trains with SyncBN (DDP) and AMP.
sync_bn = 'torch'
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0))
max_epochs = 50
param_scheduler = [
    dict(
        type='MultiStepLR',
        by_epoch=True,
        begin=0,
        end=max_epochs,
        milestones=[35],
        gamma=0.1)
]
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
log_processor = dict(by_epoch=True)
# Keep the checkpoint with the best val mIoU.
default_hooks = dict(
    logger=dict(interval=50, log_metric_by_epoch=True),
    checkpoint=dict(
        by_epoch=True, interval=1, max_keep_ckpts=2, save_best='mIoU',
        rule='greater'))
auto_scale_lr = dict(enable=False, base_batch_size=32)
