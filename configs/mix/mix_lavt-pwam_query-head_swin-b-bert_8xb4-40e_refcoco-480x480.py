# Mix (c): LAVT's language-aware Swin-B (a PWAM + language gate after every
# stage, BERT-base words) feeding HARIS's query-token mask decoder
# (QueryMaskHead) with HARIS's focal + dice loss, in place of LAVT's
# top-down decoder. Training recipe and evaluation: LAVT's
# (configs/lavt/lavt_swin-b_8xb4-40e_refcoco-480x480.py: AdamW, poly, 40
# epochs, 480x480, IoU on the input grid). An untrained recipe: no numbers
# are claimed.
#
# Interfaces:
# * MultiModalSwin levels 128 / 256 / 512 / 1024 at strides 4 / 8 / 16 / 32
#   (120 / 60 / 30 / 15 at 480), already language-aware; BERT words (B, 20,
#   768);
# * glue: FeatureAdapter (fusion slot) projects every level to 256 with a
#   1x1 conv + BN + ReLU, resizes them to the stride-16 grid (30 x 30;
#   pooling the finer, upsampling the coarser), sums them, and projects
#   the words 768 -> 256;
# * QueryMaskHead: logits 120 x 120 (stride 4, as LAVT's decoder);
#   sigmoid > 0.5.
_base_ = ['../lavt/lavt_swin-b_8xb4-40e_refcoco-480x480.py']
embed_dims = 256
model = dict(
    fusion=dict(
        type='FeatureAdapter',
        in_channels=[128, 256, 512, 1024],
        out_channels=embed_dims,
        resize_to=2,
        merge='sum',
        text_channels=768,
        text_out_channels=embed_dims,
        norm_cfg={{_base_.norm_cfg}},
        act_cfg=dict(type='ReLU')),
    decode_head=dict(
        _delete_=True,
        type='QueryMaskHead',
        in_channels=embed_dims,
        channels=64,
        num_layers=3,
        num_heads=8,
        ffn_channels=1024,
        decoder_dropout=0.1,
        num_mlp_layers=3,
        loss_at='label',
        num_classes=2,
        out_channels=1,
        threshold=0.5,
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=[
            dict(type='BinaryFocalLoss', alpha=0.25, gamma=2.0,
                 loss_weight=20.0),
            dict(type='DiceLoss', use_sigmoid=True, loss_weight=1.0)
        ]))
