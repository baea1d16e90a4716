# Mix (b): BarLeRIa's parameter-efficient adapters on the frozen CLIP
# ViT-B/16 towers -- SNF (normalising-flow shortcuts in all 24 blocks) and
# LIM (text -> vision prompts and vision -> text token) -- feeding HARIS's
# query-token mask decoder (QueryMaskHead) with HARIS's focal + dice loss.
# BarLeRIa's GST side network, HA neck and CRIS decoder are left out.
# Training recipe: BarLeRIa's (configs/barleria/barleria_vit-b16_8xb4-
# 50e_refcoco-416x416.py: Adam 1e-4, 50 epochs, x0.1 at 35, 416 letterbox,
# 17 CLIP tokens). An untrained recipe: no numbers are claimed.
#
# Interfaces:
# * DualEncoderBackbone levels: patch maps after blocks 4 and 8 (768) and
#   the projected final map (512), all 26 x 26 at 416; words (B, 1 + 17,
#   512) (the LIM vision token prepended), sentence (B, 512);
# * glue: FeatureAdapter (fusion slot) projects each level to 256 with a
#   1x1 conv + BN + ReLU and sums them, and projects the words 512 -> 256
#   (QueryMaskHead's queries are the words, at the decoder width);
# * QueryMaskHead: query token + words attend to the 26 x 26 map; logits
#   104 x 104; sigmoid > 0.5.
_base_ = ['../barleria/barleria_vit-b16_8xb4-50e_refcoco-416x416.py']
embed_dims = 256
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    backbone=dict(side_net=None),
    fusion=dict(
        _delete_=True,
        type='FeatureAdapter',
        in_channels=[768, 768, 512],
        out_channels=embed_dims,
        merge='sum',
        text_channels=512,
        text_out_channels=embed_dims,
        norm_cfg=norm_cfg,
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
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=[
            dict(type='BinaryFocalLoss', alpha=0.25, gamma=2.0,
                 loss_weight=20.0),
            dict(type='DiceLoss', use_sigmoid=True, loss_weight=1.0)
        ]))
val_evaluator = dict(type='RefSegMetric', threshold=0.5, pr_op='>')
test_evaluator = val_evaluator
