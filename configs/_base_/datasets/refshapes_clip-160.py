# RefShapes (refshapes.py) for the small CLIP-style demos on CPU: 160x160
# letterbox padded with CLIP's mean, random horizontal flip for training
# (RefRandomFlip swaps left / right in the sentence), CLIP BPE to 20
# tokens, batch 16; Pr@X (IoU > X) with sigmoid > 0.35. A demo that
# changes a transform rebuilds the pipelines from these ones, e.g.
#   test_pipeline = [tokenizer if t.type == 'TokenizeText' else t
#                    for t in _base_.test_pipeline]
_base_ = ['./refshapes.py']
img_scale = (160, 160)
context_length = 20
pad_val = (104.09373615, 116.7460125, 122.7709383)  # CLIP mean, BGR
tokenizer = dict(
    type='TokenizeText', tokenizer='clip', context_length=context_length)
train_pipeline = [
    _base_.load_image,
    dict(type='LoadRefMask'),
    dict(type='RefRandomFlip', prob=0.5),
    dict(type='Letterbox', scale=img_scale, pad_val=pad_val),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=_base_.meta_keys),
]
test_pipeline = [
    _base_.load_image,
    dict(type='Letterbox', scale=img_scale, pad_val=pad_val),
    dict(type='LoadRefMask'),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=_base_.meta_keys),
]
train_dataloader = dict(
    batch_size=16, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=16, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='RefSegMetric', threshold=0.35, pr_op='>')
test_evaluator = val_evaluator
