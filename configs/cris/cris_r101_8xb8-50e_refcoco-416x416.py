# CRIS with CLIP RN101 on RefCOCO (UNC); see
# cris_r50_8xb8-50e_refcoco-416x416.py for the recipe and
# configs/_base_/models/cris_r101.py for the widths.
_base_ = [
    '../_base_/models/cris_r101.py',
    '../_base_/datasets/refcoco_clip-416.py',
    '../_base_/schedules/cris_8xb8-50e.py'
]
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    text_encoder=dict(context_length=_base_.context_length))
