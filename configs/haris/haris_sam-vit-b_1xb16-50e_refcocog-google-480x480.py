# HARIS on G-Ref (Google partition: val(G)):
# 25 tokens (paper) instead of 17.
_base_ = ['./haris_sam-vit-b_1xb16-50e_refcoco-480x480.py']
ref_dataset = dict(dataset='refcocog', split_by='google')
context_length = 25
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
model = dict(text_encoder=dict(context_length=context_length))
