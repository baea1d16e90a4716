# HARIS ablation "w/o LW: 72.86"
# (paper, RefCOCO val IoU) on the full RefCOCO config; see
# projects/haris/README.md.
_base_ = [
    '../../../configs/haris/haris_sam-vit-b_1xb16-50e_refcoco-480x480.py'
]
model = dict(fusion=dict(hla_cfg=dict(use_lw=False)))
