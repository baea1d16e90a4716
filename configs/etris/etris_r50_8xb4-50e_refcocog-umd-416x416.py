# ETRIS RN50 on G-Ref (UMD): 22 tokens instead of 17.
_base_ = [
    '../_base_/models/etris_r50.py',
    '../_base_/datasets/refcocog_umd_clip-416.py',
    '../_base_/schedules/schedule_50e_adam_step35.py'
]
train_dataloader = dict(batch_size=4)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(text=dict(context_length=_base_.context_length)))
# ETRIS trains with SyncBN (DDP) and AMP.
sync_bn = 'torch'
auto_scale_lr = dict(enable=False, base_batch_size=32)
