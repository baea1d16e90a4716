# ETRIS (Xu et al., ICCV 2023), CLIP RN50: frozen CLIP RN50 visual tower
# (CRIS's dense attention pool with `connect`) and CLIP text tower run
# together (DualEncoderBackbone): stem + layer1, then text blocks 1-4 and
# layer2, a Bridger stage, text blocks 5-8 and layer3, a Bridger stage, text
# blocks 9-12 and layer4, a Bridger stage, then the attention pool. Hook
# points (visual block, text block) = (1, 4), (2, 8), (3, 12), where visual
# blocks 1 / 2 / 3 are layer2 / layer3 / layer4. The neck gets layer2 and
# layer3 after their Bridger stage and attnpool(layer4 + Bridger): 512 x 52^2,
# 1024 x 26^2, 1024 x 13^2 at 416; the HA neck brings them to 512 x 26^2
# (strides 2, 1, 2), then the GA decoder (FFN 512) and CRIS's projector.
# Trainable: BridgerRN (1,942,080), HA + GA + projector (26,735,105) and the
# two positional embeddings (attnpool 50 x 2048 + text 77 x 512).
# Upstream: kkakkkka/ETRIS (model/bridger.py Bridger_RN, model/layers.py
# HA / GA / Projector / Interactor, config/*/bridge_r50.yaml);
# shared/docs/ris_methods.md 3.3, 3.4.
#
# Frozen means frozen: the whole CLIP tower, BatchNorm included, stays in
# eval mode, so no running statistic changes (upstream leaves the frozen
# BNs in train mode under SyncBN, so their running statistics drift with
# the training data). CRIS's `connect` (1x1 conv + BN in the attention
# pool, not part of CLIP) is randomly initialised and frozen, as upstream;
# in eval mode its BN keeps its initial statistics (identity), so the
# branch is a fixed random 1x1 projection of layer4 (upstream normalises it
# with batch statistics while training). Add 'attnpool.connect' to
# `trainable` to train it instead (+2,099,200 parameters).
#
# Weights: nothing is downloaded and OpenAI's RN50.pt is not available
# offline, so this config builds randomly initialised towers. To start
# from CLIP: convert RN50.pt with tools/model_converters/clip_to_ris.py,
# load the visual tower with `visual.init_cfg=dict(type='Pretrained',
# checkpoint=<converted>, prefix='backbone.')`, and load the text tower
# from the converted `text_encoder.*` keys renamed to `backbone.text.*`
# (e.g. with `load_from` on a renamed copy); `connect` and the head stay
# random.
_base_ = ['./etris_vit-b16.py']  # same head; ResNet tower and widths here
model = dict(
    backbone=dict(
        # input_size=224 sizes the 7 x 7 (+1) positional table of OpenAI's
        # checkpoint; it is resized to the input grid on every forward.
        visual=dict(
            _delete_=True,
            type='CLIPResNet',
            depth=50,
            base_channels=64,
            input_size=224,
            num_attn_heads=32,
            output_dim=1024),
        # OpenAI's text tower (width 512, 12 layers); EOT @ projection 1024.
        text=dict(config=dict(projection_dim=1024)),
        interactions=[
            dict(
                after=[(1, 4), (2, 8), (3, 12)],
                module=dict(
                    type='BridgerRN',
                    visual_dim=(512, 1024, 2048),
                    text_dim=512,
                    d_model=64,
                    num_heads=4,
                    strides=(2, 1, 2),
                    zoom_modes=('down', 'down', 'up'),
                    ffn_dim=128,
                    dropout=0.1,
                    # Deliberate: padding words are masked as keys
                    # (upstream attends to them; False reproduces it).
                    mask_padding=True)),
        ],
        # layer2 and layer3 maps after their Bridger stage.
        visual_taps=(1, 2),
        trainable=('attnpool.positional_embedding', 'position_embedding')),
    fusion=dict(
        in_channels=[512, 1024, 1024], strides=[2, 1, 2], text_channels=1024),
    decode_head=dict(sent_channels=1024))
