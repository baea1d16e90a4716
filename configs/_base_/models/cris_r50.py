# CRIS (Wang et al., CVPR 2022): CLIP RN50 with CRIS's dense attention pool
# (+ the new residual `connect`), CLIP's text transformer (17 tokens,
# trained), the text-gated FPN with CoordConv, a 3-layer vision-language
# transformer decoder and the text-conditioned projector; 1-channel logits
# at stride 4 (104 x 104 at 416), BCE with logits, sigmoid > 0.35.
# Upstream: DerrickWang005/CRIS.pytorch (model/clip.py, model/layers.py,
# model/segmenter.py, config/refcoco/cris_r50.yaml).
#
# Weights: nothing is downloaded, and OpenAI's RN50.pt is not available
# offline, so this config builds randomly initialised encoders. To start
# from CLIP as CRIS does, convert the OpenAI TorchScript archive:
#   python tools/model_converters/clip_to_ris.py RN50.pt \
#       pretrain/clip_rn50_ris.pth --config <this method config>
# and set `load_from = 'pretrain/clip_rn50_ris.pth'` (it holds backbone.*
# and text_encoder.*; `attnpool.connect` and the head stay random, as in
# CRIS). The backbone alone can also be loaded with
#   model.backbone.init_cfg=dict(type='Pretrained',
#       checkpoint='pretrain/clip_rn50_ris.pth', prefix='backbone.')
# (the text encoder ignores init_cfg; use load_from for it).
norm_cfg = dict(type='BN', requires_grad=True)
# CLIP's mean / std (0.48145466, 0.4578275, 0.40821073) / (0.26862954,
# 0.26130258, 0.27577711) on the 0-255 scale, RGB.
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
    # Outputs layer2 / layer3 / dense attnpool: 512 / 1024 / 1024 channels
    # at strides 8 / 16 / 32. input_size=224 sizes the 7x7 positional grid
    # of OpenAI's checkpoint; it is resized to the input every forward.
    backbone=dict(
        type='CLIPResNet',
        depth=50,
        base_channels=64,
        input_size=224,
        num_attn_heads=32,
        output_dim=1024),
    # OpenAI's text tower (width 512, 12 layers, 8 heads, 77 positions);
    # the EOT feature is projected to 1024 (RN50's embedding width).
    text_encoder=dict(
        type='RefCLIPTextEncoder',
        context_length=17,
        config=dict(projection_dim=1024)),
    fusion=dict(
        type='CRISFPN',
        in_channels=[512, 1024, 1024],
        out_channels=[256, 512, 1024],
        text_channels=1024,
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='CRISHead',
        in_channels=512,
        channels=256,
        sent_channels=1024,
        num_layers=3,
        num_heads=8,
        ffn_channels=2048,
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
