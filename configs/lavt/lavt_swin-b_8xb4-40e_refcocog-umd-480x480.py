# LAVT on G-Ref (UMD), as lavt_swin-b_8xb4-40e_refcoco-480x480.py.
_base_ = [
    '../_base_/models/lavt_swin-b.py',
    '../_base_/datasets/refcocog-umd_bert-480.py',
    '../_base_/schedules/schedule_40e_adamw_poly.py'
]
train_dataloader = dict(batch_size=4)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    test_cfg=dict(output_size='input'))
