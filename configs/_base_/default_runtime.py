default_scope = 'mmseg'
custom_imports = dict(imports=['ris_plugins'], allow_failed_imports=False)
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
vis_backends = [dict(type='LocalVisBackend')]
# Pictures of (image, sentence) pairs: prediction overlay + contour,
# ground-truth contour, sentence and IoU in a caption band
# (ris_plugins/visualization).
visualizer = dict(
    type='RefSegLocalVisualizer', vis_backends=vis_backends,
    name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # tools/test.py --show-dir DIR: DIR/<image stem>_<ref_id>_<sent_id>.png,
    # one per (ref, sentence), every sample (interval=1)
    visualization=dict(type='RefSegVisualizationHook', interval=1),
    # load_from / --checkpoint / resume must match the model (set
    # strict=False to initialise partially on purpose; resume stays strict)
    strict_load=dict(type='StrictLoadHook', strict=True),
    # RNG states in every checkpoint, restored by --resume
    rng_state=dict(type='RNGStateHook'),
    # each dataloader's TokenizeText must fit the text encoder (vocabulary,
    # context length), checked once before the run
    text_check=dict(type='TextInputCheckHook'))
# A fixed seed: --resume then reproduces the uninterrupted run exactly
# (mmengine seeds the sampler before it reads the checkpoint's seed, so a
# random per-run seed would change the data order after a resume).
randomness = dict(seed=0)
