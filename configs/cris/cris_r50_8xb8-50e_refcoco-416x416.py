# CRIS with CLIP RN50 on RefCOCO (UNC): 416x416 letterbox (bicubic, padded
# with CLIP's mean), CLIP BPE to 17 tokens, no augmentation, batch 8 GPUs x
# 8, Adam 1e-4 (CLIP encoders 1e-5), 50 epochs with x0.1 at epoch 35, mIoU
# and Pr@X (IoU > X) at the original resolution with sigmoid > 0.35.
# See configs/_base_/models/cris_r50.py for loading OpenAI CLIP weights.
#
# Differences from upstream: the train mask is letterboxed with nearest
# interpolation (binary) where CRIS warps it linearly (soft borders);
# predictions are resized bilinearly (CRIS: bicubic, align_corners=True);
# the backbone lr multiplier applies from the first epoch (CRIS's group
# lrs only take effect after the first scheduler step).
_base_ = [
    '../_base_/models/cris_r50.py',
    '../_base_/datasets/refcoco_clip-416.py',
    '../_base_/schedules/cris_8xb8-50e.py'
]
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    text_encoder=dict(context_length=_base_.context_length))
