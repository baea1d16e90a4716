# RefCOCO (UNC) in the CLIP-based RIS setting shared by CRIS, ETRIS and
# BarLeRIa (upstream CRIS config/refcoco/cris_r50.yaml): 416x416 letterbox
# padded with CLIP's mean, CLIP BPE to 17 tokens, no augmentation; one
# random sentence per ref per epoch (sentence_mode='random'), validation on
# the first sentence of each ref, test on all; mIoU and Pr@X (IoU > X) at
# the original resolution with sigmoid > 0.35.  Pr@X counts exactly as the
# CRIS, ETRIS and BarLeRIa `engine/engine.py` do: I / (U + 1e-6) against
# float32 torch.arange(0.5, 1.0, 0.1), so an IoU of exactly 0.7 or 0.9
# counts (pr_thresholds='cris').
# Method configs set the per-GPU batch size and model.data_preprocessor
# size / text context length (from `img_scale` / `context_length` here).
# RefCOCO+ and G-Ref in this setting: refcoco+_clip-416.py,
# refcocog-umd_clip-416.py.
# A variant that changes a transform rebuilds the pipelines from these ones
# (lists are replaced wholesale on inheritance), e.g.
#   train_pipeline = [tokenizer if t.type == 'TokenizeText' else t
#                     for t in _base_.train_pipeline]
_base_ = ['./refcoco_unc.py']
img_scale = (416, 416)
context_length = 17
# CLIP's mean in BGR order (images are BGR until the data preprocessor):
# the padding becomes 0 after normalisation, as in CRIS's affine warp.
pad_val = (104.09373615, 116.7460125, 122.7709383)
tokenizer = dict(
    type='TokenizeText', tokenizer='clip', context_length=context_length)
train_pipeline = [
    _base_.load_image,
    dict(type='LoadRefMask'),
    dict(type='Letterbox', scale=img_scale, pad_val=pad_val),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=_base_.meta_keys),
]
# The mask is loaded after the letterbox: IoU at the original resolution.
test_pipeline = [
    _base_.load_image,
    dict(type='Letterbox', scale=img_scale, pad_val=pad_val),
    dict(type='LoadRefMask'),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=_base_.meta_keys),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=4,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, dataset=dict(sentence_mode='first',
                               pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=1, dataset=dict(sentence_mode='all', pipeline=test_pipeline))
val_evaluator = dict(
    type='RefSegMetric', threshold=0.35, pr_op='>', pr_thresholds='cris')
test_evaluator = val_evaluator
