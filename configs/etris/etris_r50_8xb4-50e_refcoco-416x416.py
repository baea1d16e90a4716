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
    '../_base_/models/etris_r50.py',
    '../_base_/datasets/refcoco_clip-416.py',
    '../_base_/schedules/etris_8xb4-50e.py'
]
train_dataloader = dict(batch_size=4)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(text=dict(context_length=_base_.context_length)))
