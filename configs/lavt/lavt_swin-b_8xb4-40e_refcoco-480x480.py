# LAVT on RefCOCO (UNC): 480x480 squash resize (no letterbox, no flip),
# BERT WordPiece to 20 tokens, batch 8 GPUs x 4, AdamW 5e-5 with poly decay
# for 40 epochs; IoU on the 480x480 input grid (test_cfg.output_size).
# See _base_/datasets/refcoco_bert-480.py for the data pipeline (ours by
# default; LAVT's own is lavt-upstream-data_*.py).
_base_ = [
    '../_base_/models/lavt_swin-b.py',
    '../_base_/datasets/refcoco_bert-480.py',
    '../_base_/schedules/schedule_40e_adamw_poly.py'
]
train_dataloader = dict(batch_size=4)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    test_cfg=dict(output_size='input'))
