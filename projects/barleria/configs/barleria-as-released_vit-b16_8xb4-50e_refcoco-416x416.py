# Full BarLeRIa with every behaviour of the release that this plugin fixes
# switched back on, for comparison: vision -> text LIM off (use_txt_add:
# False), prompts and side-net prompts of padding tokens attended to, and
# the global prior normalised over the batch axis (so predictions depend
# on the batch composition).
_base_ = [
    '../../../configs/barleria/barleria_vit-b16_8xb4-50e_refcoco-416x416.py'
]
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
                    vision_to_text=False,
                    mask_padding=False)),
        ],
        side_net=dict(batch_axis_prior=True, include_padding=True)))
