# `make demo`: the foundation baseline of
# ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py trained faster and
# longer on 2 CPU cores: 128x128 letterbox input (1.40x the float32 step
# rate of 160x160), bf16 autocast (CPUAmpOptimWrapper) and 2.5k iterations
# instead of 2k, so that `make demo` fits in 10 minutes. On RefShapes val
# (README, "How long the demo takes"): 3k iterations of this recipe reached
# mIoU 67.54 / 67.32 / 68.59 (three runs), 2k iterations of the 160x160
# float32 one 65.34 and 60.39 (two runs).
_base_ = ['./ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py']
img_scale = (128, 128)
train_pipeline = [
    _base_.load_image,
    dict(type='LoadRefMask'),
    dict(type='RefRandomFlip', prob=0.5),
    dict(type='Letterbox', scale=img_scale),
    _base_.tokenizer,
    dict(type='PackSegInputs', meta_keys=_base_.meta_keys),
]
test_pipeline = [
    _base_.load_image,
    dict(type='Letterbox', scale=img_scale),
    dict(type='LoadRefMask'),
    _base_.tokenizer,
    dict(type='PackSegInputs', meta_keys=_base_.meta_keys),
]
model = dict(data_preprocessor=dict(size=img_scale))
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
# bf16 autocast for convolutions and matmuls; losses, norms and the
# optimizer stay float32 (torch's CPU autocast lists). On a GPU use
# mmengine's AmpOptimWrapper instead.
optim_wrapper = dict(type='CPUAmpOptimWrapper')
max_iters = 2500
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='PolyLR', eta_min=0.0, power=0.9, by_epoch=False, begin=100,
         end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
