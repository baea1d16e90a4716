# 2k iterations of AdamW with linear warm-up and poly decay, validating at
# the end (a short schedule for RefShapes on CPU).
optim_wrapper = dict(
    type='OptimWrapper',
    # fused=True: torch's single-kernel AdamW (CPU and CUDA), 4-6x faster
    # per step than the per-parameter loop on the demo models
    optimizer=dict(type='AdamW', lr=2e-3, weight_decay=1e-4, fused=True),
    clip_grad=dict(max_norm=5.0))
max_iters = 2000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='PolyLR', eta_min=0.0, power=0.9, by_epoch=False, begin=100,
         end=max_iters),
]
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
