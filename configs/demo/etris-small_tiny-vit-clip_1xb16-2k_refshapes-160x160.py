# A small ETRIS for RefShapes at 160x160 on CPU: the ETRIS modules with
# tiny widths. The frozen "CLIP" towers here are RANDOMLY INITIALISED tiny
# ones (ViT width 64, 6 blocks, patch 16; text width 64, 6 blocks, CLIP
# BPE vocabulary): no pretrained CLIP weights are available offline, so the
# Bridgers adapt random frozen features. It demonstrates the mechanics
# (hook points after blocks 2 / 4 / 6, what trains, the schedule), not
# ETRIS's accuracy. Dataset, runtime and the 2k-iteration AdamW schedule are
# the baseline demo's.
_base_ = [
    '../_base_/models/etris_vit-b16.py',
    '../_base_/datasets/refshapes_clip-160.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_2k_adamw.py'
]
tiny_norm = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(
        visual=dict(
            arch=dict(
                _delete_=True,
                embed_dims=64,
                num_layers=6,
                num_heads=4,
                feedforward_channels=256),
            img_size=160,
            output_dim=64),
        text=dict(
            context_length=_base_.context_length,
            config=dict(
                hidden_size=64,
                intermediate_size=256,
                num_hidden_layers=6,
                num_attention_heads=4,
                projection_dim=64)),
        interactions=[
            dict(
                after=[(2, 2), (4, 4), (6, 6)],
                module=dict(
                    type='BridgerViT',
                    visual_dim=64,
                    text_dim=64,
                    dim=32,
                    num_heads=4,
                    num_stages=3,
                    norm_cfg=tiny_norm)),
        ],
        visual_taps=(2, 4)),
    # 10 x 10 maps at 160; decoder width 64; logits 40 x 40.
    fusion=dict(
        in_channels=[64, 64, 64], channels=64, text_channels=64,
        num_heads=4),
    decode_head=dict(
        in_channels=64,
        channels=32,
        sent_channels=64,
        num_layers=1,
        num_heads=4,
        ffn_channels=128,
        loss_decode=[
            dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            dict(type='DiceLoss', use_sigmoid=True, loss_weight=1.0)
        ]))
randomness = dict(seed=0)
