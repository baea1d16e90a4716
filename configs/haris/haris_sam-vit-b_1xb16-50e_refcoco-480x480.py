# HARIS with SAM ViT-B + CLIP ViT-B/16 text on RefCOCO (UNC): 480x480
# letterbox padded with SAM's mean [R] (the paper gives no input size; SAM's
# 1024 tables are resized to 30 x 30), CLIP BPE to 17 tokens, batch 16,
# Adam 1e-4 (no weight decay) [R: lr], 50 epochs with x0.1 at epoch 30,
# mIoU / oIoU / Pr@X at the original resolution with sigmoid > 0.5 [R].
# Only the fusion and the mask decoder train (SAM and CLIP are frozen).
# See configs/_base_/models/haris_sam-vit-b_clip.py for the weights.
_base_ = [
    '../_base_/models/haris_sam-vit-b_clip.py',
    '../_base_/datasets/refcoco_clip-480.py',
    '../_base_/schedules/haris_1xb16-50e.py'
]
train_dataloader = dict(batch_size=16)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(img_size=_base_.img_scale[0]),
    text_encoder=dict(context_length=_base_.context_length))
