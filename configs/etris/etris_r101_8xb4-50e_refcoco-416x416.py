# ETRIS with frozen CLIP RN101 on RefCOCO (UNC); see
# etris_r50_8xb4-50e_refcoco-416x416.py for the recipe and
# configs/_base_/models/etris_r101.py for the widths.
_base_ = [
    '../_base_/models/etris_r101.py',
    '../_base_/datasets/refcoco_clip-416.py',
    '../_base_/schedules/etris_8xb4-50e.py'
]
train_dataloader = dict(batch_size=4)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(text=dict(context_length=_base_.context_length)))
