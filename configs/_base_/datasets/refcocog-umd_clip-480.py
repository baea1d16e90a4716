# G-Ref (UMD partition: val(U) / test(U)) in HARIS's setting
# (refcoco_clip-480.py) with 25 tokens (paper) instead of 17.
_base_ = ['./refcoco_clip-480.py']
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
