# CRIS RN101 on G-Ref (UMD): the RN50 G-Ref data settings (22 tokens) with
# the RN101 model.
_base_ = ['./cris_r50_8xb8-50e_refcocog-umd-416x416.py']
model = dict(
    backbone=dict(depth=101, output_dim=512),
    text_encoder=dict(config=dict(projection_dim=512)),
    fusion=dict(in_channels=[512, 1024, 512], text_channels=512),
    decode_head=dict(sent_channels=512))
