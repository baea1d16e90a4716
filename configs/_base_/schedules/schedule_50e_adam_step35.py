# CRIS's schedule, also ETRIS's and BarLeRIa's (upstream config/*/*.yaml):
# AMP, Adam lr 1e-4 without weight decay, 50 epochs with x0.1 at epoch 35,
# validation every epoch, epoch-based logging and the checkpoint with the
# best val mIoU kept (plus the last two). It refines the runtime's hooks,
# so it inherits default_runtime.py (list it in place of that file:
# mmengine forbids the same key in two bases of one list).
_base_ = ['../default_runtime.py']
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0))
max_epochs = 50
param_scheduler = [
    dict(
        type='MultiStepLR',
        by_epoch=True,
        begin=0,
        end=max_epochs,
        milestones=[35],
        gamma=0.1)
]
train_cfg = dict(
    type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
log_processor = dict(by_epoch=True)
default_hooks = dict(
    logger=dict(interval=50, log_metric_by_epoch=True),
    checkpoint=dict(
        by_epoch=True, interval=1, max_keep_ckpts=2, save_best='mIoU',
        rule='greater'))
