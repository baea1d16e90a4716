# RefCOCO (UNC) in HARIS's setting: the CLIP-based RIS data of
# refcoco_clip-416.py (CLIP BPE to 17 tokens, no augmentation, one random
# sentence per ref per epoch) with the letterbox at 480x480 padded with
# SAM's mean (the padding becomes 0 after SAM's normalisation; the paper
# gives no input size), and mIoU / oIoU / Pr@X at the original resolution
# with sigmoid > 0.5. RefCOCO+ / G-Ref: refcoco+_clip-480.py,
# refcocog-umd_clip-480.py, refcocog-google_clip-480.py.
_base_ = ['./refcoco_clip-416.py']
img_scale = (480, 480)
pad_val = (103.53, 116.28, 123.675)  # SAM's mean, BGR
train_pipeline = [
    dict(t, scale=img_scale, pad_val=pad_val) if t.type == 'Letterbox' else t
    for t in _base_.train_pipeline
]
test_pipeline = [
    dict(t, scale=img_scale, pad_val=pad_val) if t.type == 'Letterbox' else t
    for t in _base_.test_pipeline
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
val_evaluator = dict(_delete_=True, type='RefSegMetric', threshold=0.5)
test_evaluator = dict(_delete_=True, type='RefSegMetric', threshold=0.5)
