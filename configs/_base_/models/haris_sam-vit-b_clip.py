# HARIS (Zhang et al., arXiv 2405.10707, "Human-Like Attention for
# Reference Image Segmentation"): frozen SAM ViT-B image encoder, frozen
# CLIP ViT-B/16 text encoder; trained: three Human-Like Attention blocks
# with hierarchical injection (HierarchicalHLA) and the query-token mask
# decoder (QueryMaskHead), focal + dice loss. No official code exists:
# every choice the paper leaves open is an option here, with the default
# marked [R] in projects/haris/README.md.
#
# Weights: nothing is downloaded; this config builds random encoders. To
# start from SAM + CLIP as HARIS does, convert both into one file:
#   python tools/model_converters/sam_to_ris.py sam_vit_b_01ec64.pth \
#       pretrain/sam-b_clip-b16_ris.pth --clip ViT-B-16.pt \
#       --config <this method config>
# and set `load_from = 'pretrain/sam-b_clip-b16_ris.pth'` (backbone.* from
# SAM's image_encoder, text_encoder.* from CLIP's text tower). The SAM
# positional tables (64 x 64 for 1024 input) are resized to `img_size`
# when loaded. Alternatively point text_encoder.pretrained at a local
# Hugging Face CLIP ViT-B/16 folder.
norm_cfg = dict(type='BN', requires_grad=True)
# SAM's pixel mean / std (segment_anything/modeling/sam.py), RGB, 0-255.
data_preprocessor = dict(
    type='RefDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=0)
embed_dims = 256  # HLA / decoder width D [R]
model = dict(
    type='RefSegmentor',
    data_preprocessor=data_preprocessor,
    # SAM ViT-B: taps after global-attention blocks 5 / 8 / 11 (shallow /
    # middle / deep) [R]; `neck_as_deep=True` swaps the deep tap for SAM's
    # 256-d neck (then fusion.in_channels=[768, 768, 256]). img_size is the
    # training input size (positional tables resized from 1024 at load).
    backbone=dict(
        type='SAMViT',
        arch='base',
        img_size=480,
        out_indices=(5, 8, 11),
        neck_as_deep=False,
        frozen=True),
    # CLIP ViT-B/16 text tower (width 512, 12 layers), EOT feature
    # projected to 512, frozen.
    text_encoder=dict(
        type='RefCLIPTextEncoder',
        context_length=17,
        config=dict(projection_dim=512),
        frozen=True),
    fusion=dict(
        type='HierarchicalHLA',
        in_channels=[768, 768, 768],
        text_channels=512,
        sent_channels=512,
        embed_dims=embed_dims,
        hla_cfg=dict(
            feedback_at='visual',  # [R] 'visual' | 'attention'
            feedback_mode='add',  # [R] 'add' | 'gate'
            feedback_ratio=4,
            use_feedback=True,  # ablation: w/o feedback
            use_vw=True,  # ablation: w/o VW
            use_lw=True,  # ablation: w/o LW
            replace_with_cross_attn=False),  # ablation: HLA -> cross-attn
        kernel_size=3,  # [R]
        stride=1,  # [R]
        use_hierarchy=True,  # ablation: w/o hierarchy
        word_flow='mean',  # [R] 'mean' | 'chain'
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='QueryMaskHead',
        in_channels=embed_dims,
        channels=64,
        num_layers=3,  # [R]
        num_heads=8,
        ffn_channels=1024,
        decoder_dropout=0.1,
        num_mlp_layers=3,
        decoder_replaced=False,  # ablation: decoder replaced
        loss_at='label',
        num_classes=2,
        out_channels=1,
        threshold=0.5,
        norm_cfg=norm_cfg,
        align_corners=False,
        # focal:dice = 20:1 as SAM [R]; HARIS gives no weights.
        loss_decode=[
            dict(type='BinaryFocalLoss', alpha=0.25, gamma=2.0,
                 loss_weight=20.0),
            dict(type='DiceLoss', use_sigmoid=True, loss_weight=1.0)
        ]),
    train_cfg=dict(),
    test_cfg=dict())
