# A small LAVT for RefShapes on CPU: the LAVT architecture (MultiModalSwin
# with PWAM + language gate per stage, LAVTHead) at reduced width (Swin
# embed 32, depths 2-2-2-2, window 5), with the frozen pretrained
# all-MiniLM-L6-v2 as text encoder (width 384) instead of BERT-base, the
# demo's 160x160 letterbox input, and 1.5k iterations at AdamW lr 1e-3 so
# training fits the demo's time budget on 2 cores (~0.41 s per iteration).
_base_ = ['./ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(
        _delete_=True,
        type='MultiModalSwin',
        arch=dict(embed_dims=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8]),
        img_size=160,
        window_size=5,
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        text_channels=384),
    fusion=None,
    decode_head=dict(
        _delete_=True,
        type='LAVTHead',
        in_channels=[32, 64, 128, 256],
        channels=64,
        num_classes=2,
        norm_cfg=norm_cfg,
        loss_decode=[
            dict(type='CrossEntropyLoss', class_weight=[0.9, 1.1]),
            dict(
                type='DiceLoss',
                use_sigmoid=False,
                ignore_index=0,
                loss_weight=1.0)
        ]))
max_iters = 1500
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='PolyLR', eta_min=0.0, power=0.9, by_epoch=False, begin=100,
         end=max_iters),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
