# ETRIS (Xu et al., ICCV 2023), ViT-B/16: frozen CLIP ViT-B/16 visual and
# text towers run block by block together (DualEncoderBackbone); a Bridger
# stage after blocks 4, 8 and 12 of both towers; the HA neck, the GA decoder
# (CRIS's decoder with FFN 512) and CRIS's projector. Trainable: the
# Bridger (598,592), HA + GA + projector (22,671,361) and the two positional
# embeddings (677 x 768 visual at 416 input + 77 x 512 text); everything
# else in CLIP is frozen and kept in eval mode.
# Upstream: kkakkkka/ETRIS (model/bridger.py Bridger_ViT, model/layers.py
# HA / GA / Projector, config/*/bridge_v16.yaml).
#
# Weights: nothing is downloaded and no CLIP weights are available offline,
# so this config builds randomly initialised towers. To start from CLIP:
# * text tower: point `text.pretrained` at a local Hugging Face folder of
#   openai/clip-vit-base-patch16 (CLIPModel or CLIPTextModelWithProjection)
#   and drop `text.config`;
# * visual tower: convert OpenAI's ViT-B-16.pt with
#   tools/model_converters/clip_to_ris.py and load it with
#   `visual.init_cfg=dict(type='Pretrained', checkpoint=<converted>,
#   prefix='backbone.')` (the 197-row positional table is resized to 677
#   rows bicubically when loaded, as ETRIS does once at load).
norm_cfg = dict(type='BN', requires_grad=True)
# CLIP's mean / std on the 0-255 scale, RGB.
data_preprocessor = dict(
    type='RefDataPreProcessor',
    mean=[122.7709383, 116.7460125, 104.09373615],
    std=[68.5005327, 66.6321579, 70.32316305],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=0)
model = dict(
    type='RefSegmentor',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='DualEncoderBackbone',
        # img_size=416 sizes the positional table at 26 x 26 + 1 rows.
        visual=dict(
            type='CLIPViT',
            arch='base',
            img_size=416,
            patch_size=16,
            output_dim=512),
        # OpenAI's text tower (width 512, 12 layers); EOT @ projection 512.
        text=dict(
            type='RefCLIPTextEncoder',
            context_length=17,
            config=dict(projection_dim=512)),
        interactions=[
            dict(
                after=[(4, 4), (8, 8), (12, 12)],
                module=dict(
                    type='BridgerViT',
                    visual_dim=768,
                    text_dim=512,
                    dim=64,
                    num_heads=8,
                    num_stages=3,
                    norm_cfg=norm_cfg)),
        ],
        # Patch maps after blocks 4 and 8 (post-Bridger), then the final
        # ln_post @ proj map: 768 / 768 / 512 channels, all 26 x 26 at 416.
        visual_taps=(4, 8),
        trainable=('pos_embed', 'position_embedding')),
    text_encoder=None,
    fusion=dict(
        type='HANeck',
        in_channels=[768, 768, 512],
        channels=512,
        strides=[1, 1, 1],
        text_channels=512,
        num_heads=8,
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='CRISHead',
        in_channels=512,
        channels=256,
        sent_channels=512,
        num_layers=3,
        num_heads=8,
        ffn_channels=512,
        decoder_dropout=0.1,
        kernel_size=3,
        loss_at='logits',
        num_classes=2,
        out_channels=1,
        threshold=0.35,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict())
