# ETRIS RN50 exactly as released (kkakkkka/ETRIS, model/bridger.py
# Bridger_RN + model/layers.py Interactor): the Bridger's interactors attend
# to the padding words (no key padding mask). Our default RN configs mask
# them (mask_padding=True), which changes the outputs of a released
# checkpoint; with this config a checkpoint converted by
# tools/model_converters/etris_to_ris.py gives the release's logits.
# Everything else (frozen CLIP RN50 in eval mode, HA neck, GA decoder,
# projector, data, schedule) is etris_r50_8xb4-50e_refcoco-416x416.py.
_base_ = ['./etris_r50_8xb4-50e_refcoco-416x416.py']
model = dict(
    backbone=dict(
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
                    mask_padding=False)),
        ]))
