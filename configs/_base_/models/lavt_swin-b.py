# LAVT (Yang et al., CVPR 2022): Swin-B (window 12) with a PWAM + language
# gate per stage, BERT-base (layers 0-9 trained, no pooler), the simple
# top-down decoder and 2-class cross-entropy with weights [0.9, 1.1].
# Upstream: yz93/LAVT-RIS (lib/backbone.py, lib/mask_predictor.py).
#
# Weights: nothing is downloaded. Initialise from local files:
#   - Swin-B 22K (swin_base_patch4_window12_384_22k.pth), converted with
#     tools/model_converters/lavt_to_ris.py --swin, via
#     model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...,
#     prefix='backbone.');
#   - BERT: model.text_encoder.pretrained=<local bert-base-uncased folder>;
#   - or a whole converted LAVT checkpoint with load_from=... .
norm_cfg = dict(type='BN', requires_grad=True)
bert_base = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512)
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
        type='MultiModalSwin',
        arch='base',
        img_size=480,
        window_size=12,
        # Official LAVT pads every map to the window and keeps the shift;
        # without this mmpretrain drops the shift when a map is exactly one
        # window (384x384 input) and fails below it (192x192).
        pad_small_map=True,
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        text_channels=768,
        pwam_heads=(1, 1, 1, 1),
        pwam_dropout=0.0),
    text_encoder=dict(
        type='BertTextEncoder',
        config=bert_base,
        sentence_pooling='cls',
        trainable_layers=list(range(10))),
    decode_head=dict(
        type='LAVTHead',
        in_channels=[128, 256, 512, 1024],
        channels=512,
        num_classes=2,
        norm_cfg=norm_cfg,
        loss_decode=dict(type='CrossEntropyLoss', class_weight=[0.9, 1.1])),
    train_cfg=dict(),
    test_cfg=dict())
