# RefShapes (refshapes.py) for the small demos on CPU with the foundation
# baseline's data: 160x160 letterbox (padded with 0), random horizontal flip
# for training (RefRandomFlip swaps left / right in the sentence), BERT
# WordPiece (all-MiniLM-L6-v2's uncased vocabulary) to 20 tokens, batch 16.
_base_ = ['./refshapes.py']
img_scale = (160, 160)
train_pipeline = [
    _base_.load_image,
    dict(type='LoadRefMask'),
    dict(type='RefRandomFlip', prob=0.5),
    dict(type='Letterbox', scale=img_scale),
    _base_.tokenizer,
    dict(type='PackSegInputs', meta_keys=_base_.meta_keys),
]
test_pipeline = [
    _base_.load_image,
    dict(type='Letterbox', scale=img_scale),
    dict(type='LoadRefMask'),
    _base_.tokenizer,
    dict(type='PackSegInputs', meta_keys=_base_.meta_keys),
]
train_dataloader = dict(
    batch_size=16, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
