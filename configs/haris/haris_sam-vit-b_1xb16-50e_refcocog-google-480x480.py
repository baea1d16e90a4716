# HARIS on G-Ref (Google partition: val(G)):
# 25 tokens (paper) instead of 17, as the UMD config.
_base_ = [
    '../_base_/models/haris_sam-vit-b_clip.py',
    '../_base_/datasets/refcocog-google_clip-480.py',
    '../_base_/schedules/haris_1xb16-50e.py'
]
train_dataloader = dict(batch_size=16)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(img_size=_base_.img_scale[0]),
    text_encoder=dict(context_length=_base_.context_length))
