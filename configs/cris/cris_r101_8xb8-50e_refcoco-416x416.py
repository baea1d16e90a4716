# CRIS with CLIP RN101 on RefCOCO: the attention pool and the text
# projection are 512 wide (RN50: 1024), so the FPN's last input and the
# projector's sentence width are 512. Convert OpenAI's RN101.pt with
# tools/model_converters/clip_to_ris.py and set load_from (see
# configs/_base_/models/cris_r50.py).
_base_ = ['./cris_r50_8xb8-50e_refcoco-416x416.py']
model = dict(
    backbone=dict(depth=101, output_dim=512),
    text_encoder=dict(config=dict(projection_dim=512)),
    fusion=dict(in_channels=[512, 1024, 512], text_channels=512),
    decode_head=dict(sent_channels=512))
