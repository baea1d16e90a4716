# ETRIS ViT-B/16 on RefCOCO+ (UNC). Validation uses val (the upstream
# RefCOCO+ config validates on testB, which selects the checkpoint on a
# test split).
_base_ = [
    '../_base_/models/etris_vit-b16.py',
    '../_base_/datasets/refcoco+_clip-416.py',
    '../_base_/schedules/etris_8xb4-50e.py'
]
train_dataloader = dict(batch_size=4)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(text=dict(context_length=_base_.context_length)))
