# ETRIS with frozen CLIP RN101 on G-Ref (UMD), 22 tokens: the RN50 G-Ref
# data settings with the RN101 model (see
# etris_r101_8xb4-50e_refcoco-416x416.py for the widths).
_base_ = ['./etris_r50_8xb4-50e_refcocog-umd-416x416.py']
model = dict(
    backbone=dict(
        visual=dict(depth=101, output_dim=512),
        text=dict(config=dict(projection_dim=512))),
    fusion=dict(in_channels=[512, 1024, 512], text_channels=512),
    decode_head=dict(sent_channels=512))
