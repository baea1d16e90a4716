# BarLeRIa (Wang et al., ICLR 2024), ViT-B/16: ETRIS's frozen CLIP
# ViT-B/16 + text towers, neck, decoder and projector (etris_vit-b16.py),
# with BarLeRIa's adapters in place of the Bridger:
# * SNF: both identity shortcuts of all 12 visual and 12 text blocks become
#   an affine step + 4 planar flows (307,392 parameters);
# * LIM, text -> vision: Lin(512, 32) -> ReLU -> Lin(32, 768) on the 17
#   embedded text tokens, inserted after the visual CLS token (41,760);
#   prompts of padding tokens are masked as attention keys (the release
#   attends to them: mask_padding=False);
# * LIM, vision -> text: Lin(768, 32) -> ReLU -> Lin(32, 512) on the visual
#   CLS token, prepended to the text (41,504). Off and crashing in the
#   release; here it works and is on (the paper's "0.39M" counts it);
# * GST: the side ViT (width 144, depth 8) fed by CLIP blocks 1, 4, 7, 10;
#   its output, projected to 512, is added to the HA neck's output and its
#   reconstruction loss joins the loss (backbone.loss_side, weight 1). The
#   global prior normalises per feature (batch_axis_prior=False); the
#   release normalises over the batch axis (set True to reproduce).
# The two positional embeddings train; the rest of CLIP is frozen.
# Upstream: NastrondAd/BarLeRIa (snf.py, flow.py, model/intertwiner.py,
# model/side_adapter/, model/segmenter.py, config/*/barleria_v16.yaml).
# Weights: see etris_vit-b16.py (random towers unless CLIP is loaded).
_base_ = ['./etris_vit-b16.py']
model = dict(
    backbone=dict(
        interactions=[
            dict(
                after=(0, 0),
                module=dict(
                    type='LIMPrompts',
                    visual_dim=768,
                    text_dim=512,
                    hidden_dim=32,
                    text_to_vision=True,
                    vision_to_text=True,
                    mask_padding=True)),
        ],
        shortcuts=dict(
            type='SNF',
            visual_dim=768,
            text_dim=512,
            visual_layers=12,
            text_layers=12,
            flow_length=4),
        side_net=dict(
            type='GSTSideNet',
            visual_dim=768,
            text_dim=512,
            width=144,
            depth=8,
            num_heads=3,
            num_queries=128,
            fusion_map=((1, 0), (4, 1), (7, 2), (10, 3)),
            grid=26,
            out_dim=512,
            batch_axis_prior=False),
        side_loss_weight=1.0),
    # The side output is the fourth level, added to the neck's output.
    fusion=dict(extra_input=True))
