# ETRIS ViT-B/16 on G-Ref (UMD): 22 tokens instead of 17.
_base_ = [
    '../_base_/models/etris_vit-b16.py',
    '../_base_/datasets/refcocog-umd_clip-416.py',
    '../_base_/schedules/etris_8xb4-50e.py'
]
train_dataloader = dict(batch_size=4)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(text=dict(context_length=_base_.context_length)))
