# CRIS RN50 on G-Ref (UMD): 22 tokens instead of 17.
_base_ = [
    '../_base_/models/cris_r50.py',
    '../_base_/datasets/refcocog-umd_clip-416.py',
    '../_base_/schedules/cris_8xb8-50e.py'
]
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    text_encoder=dict(context_length=_base_.context_length))
