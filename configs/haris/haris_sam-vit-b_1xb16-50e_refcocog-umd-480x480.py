# HARIS on G-Ref (UMD partition: val(U) / test(U)):
# 25 tokens (paper) instead of 17.
_base_ = ['./haris_sam-vit-b_1xb16-50e_refcoco-480x480.py']
ref_dataset = dict(dataset='refcocog', split_by='umd')
context_length = 25
tokenizer = dict(
    type='TokenizeText', tokenizer='clip', context_length=context_length)
train_pipeline = [
    tokenizer if t.type == 'TokenizeText' else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    tokenizer if t.type == 'TokenizeText' else t
    for t in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline, **ref_dataset))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline, **ref_dataset))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline, **ref_dataset))
model = dict(text_encoder=dict(context_length=context_length))
