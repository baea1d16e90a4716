# RefCOCO (UNC) in LAVT's setting: 480x480 squash resize (no letterbox, no
# flip), BERT WordPiece to 20 tokens (the uncased vocabulary of the offline
# all-MiniLM-L6-v2 package is bert-base-uncased's), shuffled epochs.
# Training and evaluation use the same pipeline: LAVT evaluates at 480x480,
# so the mask is resized (nearest) with the image and predictions stay on
# the input grid (the method config sets test_cfg.output_size='input').
# Our data pipeline by default: cv2 bilinear resize (cv2 nearest for the
# mask) and WordPiece truncation that keeps [SEP]; LAVT's own pipeline (PIL
# resize, ids cut at [:20]) is configs/lavt/lavt-upstream-data_*.py.
# RefCOCO+ / G-Ref: refcoco+_bert-480.py, refcocog-umd_bert-480.py,
# refcocog-google_bert-480.py.
_base_ = ['./refcoco_unc.py']
img_scale = (480, 480)
resize = dict(type='Resize', scale=img_scale, keep_ratio=False, backend='cv2')
train_pipeline = [
    _base_.load_image,
    dict(type='LoadRefMask'),
    resize,
    _base_.tokenizer,
    dict(type='PackSegInputs', meta_keys=_base_.meta_keys),
]
test_pipeline = train_pipeline
train_dataloader = dict(
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
