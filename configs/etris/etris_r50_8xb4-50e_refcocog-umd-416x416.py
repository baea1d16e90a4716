# ETRIS RN50 on G-Ref (UMD): 22 tokens instead of 17.
_base_ = ['./etris_r50_8xb4-50e_refcoco-416x416.py']
ref_dataset = dict(dataset='refcocog', split_by='umd')
context_length = 22
img_scale = {{_base_.img_scale}}
pad_val = {{_base_.pad_val}}
meta_keys = {{_base_.meta_keys}}
tokenizer = dict(
    type='TokenizeText', tokenizer='clip', context_length=context_length)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadRefMask'),
    dict(type='Letterbox', scale=img_scale, pad_val=pad_val),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Letterbox', scale=img_scale, pad_val=pad_val),
    dict(type='LoadRefMask'),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline, **ref_dataset))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline, **ref_dataset))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline, **ref_dataset))
model = dict(backbone=dict(text=dict(context_length=context_length)))
