# A small BarLeRIa for RefShapes at 160x160 on CPU: SNF, LIM (both
# directions) and a small GST side network on the same tiny towers as the
# ETRIS demo. The frozen "CLIP" towers are RANDOMLY INITIALISED tiny ones
# (ViT width 64, 6 blocks, patch 16; text width 64, 6 blocks, CLIP BPE
# vocabulary): no pretrained CLIP weights are available offline, so the
# adapters adapt random frozen features. It demonstrates the mechanics,
# not BarLeRIa's accuracy.
_base_ = ['./etris-small_tiny-vit-clip_1xb16-2k_refshapes-160x160.py']
model = dict(
    backbone=dict(
        interactions=[
            dict(
                after=(0, 0),
                module=dict(
                    type='LIMPrompts',
                    visual_dim=64,
                    text_dim=64,
                    hidden_dim=16,
                    text_to_vision=True,
                    vision_to_text=True)),
        ],
        shortcuts=dict(
            type='SNF',
            visual_dim=64,
            text_dim=64,
            visual_layers=6,
            text_layers=6,
            flow_length=4),
        # Side ViT width 48, depth 4, fed by tiny-CLIP blocks 1, 2, 4, 5
        # (the 1 / 4 / 7 / 10 of 12 scaled to 6 blocks); 10 x 10 grid.
        side_net=dict(
            type='GSTSideNet',
            visual_dim=64,
            text_dim=64,
            width=48,
            depth=4,
            num_heads=3,
            num_queries=16,
            fusion_map=((1, 0), (2, 1), (4, 2), (5, 3)),
            grid=10,
            out_dim=64)),
    fusion=dict(extra_input=True))
