# LAVT on RefCOCO (UNC): 480x480 squash resize (no letterbox, no flip),
# BERT WordPiece to 20 tokens, batch 8 GPUs x 4. The uncased WordPiece
# vocabulary of the offline all-MiniLM-L6-v2 package is bert-base-uncased's.
_base_ = [
    '../_base_/models/lavt_swin-b.py', '../_base_/datasets/refcoco_unc.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/schedule_40e_adamw_poly.py'
]
img_scale = (480, 480)
tokenizer = {{_base_.tokenizer}}
meta_keys = {{_base_.meta_keys}}
load_image = {{_base_.load_image}}
# Our data pipeline by default: cv2 bilinear resize (cv2 nearest for the
# mask) and WordPiece truncation that keeps [SEP]. LAVT's own pipeline
# (PIL resize, ids cut at [:20]) is lavt-upstream-data_*.py; see README.md.
resize = dict(type='Resize', scale=img_scale, keep_ratio=False, backend='cv2')
train_pipeline = [
    load_image,
    dict(type='LoadRefMask'),
    resize,
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
# LAVT evaluates at 480x480: the mask is resized (nearest) with the image
# and predictions stay on the input grid (test_cfg.output_size='input').
test_pipeline = [
    load_image,
    dict(type='LoadRefMask'),
    resize,
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=4,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
model = dict(
    data_preprocessor=dict(size=img_scale),
    test_cfg=dict(mode='whole', output_size='input'))
# Epoch-based logging and checkpoints; keep the best val oIoU.
log_processor = dict(by_epoch=True)
default_hooks = dict(
    logger=dict(log_metric_by_epoch=True),
    checkpoint=dict(
        by_epoch=True, interval=1, max_keep_ckpts=2, save_best='oIoU',
        rule='greater'))
