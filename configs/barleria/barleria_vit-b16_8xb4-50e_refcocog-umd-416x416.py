# BarLeRIa ViT-B/16 on G-Ref (UMD). BarLeRIa uses 17 tokens on every
# dataset (word_len 17); CRIS / ETRIS use 22 on G-Ref. 22 is used here so
# long G-Ref sentences are not cut; for the release's 17, inherit the
# RefCOCO config and set the dataloaders' dataset to
# dict(dataset='refcocog', split_by='umd') (as
# _base_/datasets/refcoco+_clip-416.py does for RefCOCO+).
_base_ = [
    '../_base_/models/barleria_vit-b16.py',
    '../_base_/datasets/refcocog-umd_clip-416.py',
    '../_base_/schedules/etris_8xb4-50e.py'
]
train_dataloader = dict(batch_size=4)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(text=dict(context_length=_base_.context_length)))
