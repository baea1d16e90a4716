# ETRIS with frozen CLIP RN101 (etris_r50.py otherwise): the attention pool
# and the text projection are 512 wide (RN50: 1024), so the HA neck's last
# input, its sentence width and the projector's sentence width are 512
# (upstream config/*/bridge_r101.yaml: fpn_in [512, 1024, 512], word_dim
# 512). The Bridger is RN50's (layer widths 512 / 1024 / 2048 are the
# same). Trainable: BridgerRN 1,942,080 + head 24,244,225 + positional
# embeddings (50 x 2048 + 77 x 512). Convert OpenAI's RN101.pt with
# tools/model_converters/clip_to_ris.py (see etris_r50.py).
_base_ = ['./etris_r50.py']
model = dict(
    backbone=dict(
        visual=dict(depth=101, output_dim=512),
        text=dict(config=dict(projection_dim=512))),
    fusion=dict(in_channels=[512, 1024, 512], text_channels=512),
    decode_head=dict(sent_channels=512))
