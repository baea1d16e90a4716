# LAVT's schedule: AdamW lr 5e-5, weight decay 1e-2 (none on norms, position
# embeddings and relative position bias tables), poly(0.9) stepped per
# iteration, 40 epochs, validation every epoch, epoch-based logging and the
# checkpoint with the best val oIoU kept (plus the last two). It refines the
# runtime's hooks, so it inherits default_runtime.py (list it in place of
# that file: mmengine forbids the same key in two bases of one list).
_base_ = ['../default_runtime.py']
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=5e-5, weight_decay=1e-2),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.0),
            'absolute_pos_embed': dict(decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
        }))
param_scheduler = [
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=0.9,
        by_epoch=True,
        begin=0,
        end=40,
        convert_to_iter_based=True)
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=40, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# Epoch-based logging and checkpoints; keep the best val oIoU.
log_processor = dict(by_epoch=True)
default_hooks = dict(
    logger=dict(log_metric_by_epoch=True),
    checkpoint=dict(
        by_epoch=True, interval=1, max_keep_ckpts=2, save_best='oIoU',
        rule='greater'))
