# HARIS's training recipe (arXiv 2405.10707): one GPU, no AMP, Adam 1e-4
# without weight decay [R: lr], 50 epochs with x0.1 at epoch 30, validation
# every epoch; only the checkpoint with the best val mIoU is kept. The rest
# (epoch-based logging, best-mIoU checkpointing) is
# schedule_50e_adam_step35.py's.
_base_ = ['./schedule_50e_adam_step35.py']
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0))
param_scheduler = [dict(_base_.param_scheduler[0], milestones=[30])]
default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))
