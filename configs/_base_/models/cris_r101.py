# CRIS with CLIP RN101 (cris_r50.py otherwise): the attention pool and the
# text projection are 512 wide (RN50: 1024), so the FPN's last input and the
# projector's sentence width are 512. Convert OpenAI's RN101.pt with
# tools/model_converters/clip_to_ris.py and set load_from (see
# cris_r50.py).
_base_ = ['./cris_r50.py']
model = dict(
    backbone=dict(depth=101, output_dim=512),
    text_encoder=dict(config=dict(projection_dim=512)),
    fusion=dict(in_channels=[512, 1024, 512], text_channels=512),
    decode_head=dict(sent_channels=512))
