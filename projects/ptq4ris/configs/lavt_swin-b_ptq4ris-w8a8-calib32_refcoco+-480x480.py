# PTQ4RIS W8A8 of LAVT (Swin-B, BERT-base) on refcoco+: the FP config plus
# the PTQ4RIS method base with the bit widths set.  Run with
#   mim test mmseg <this config> --checkpoint <fp lavt checkpoint>
_base_ = [
    '../../../configs/lavt/lavt_swin-b_8xb4-40e_refcoco+-480x480.py',
    '../../../configs/_base_/quantization/ptq4ris.py',
]
ptq = dict(quant_cfg=dict(w_bits=8, a_bits=8))
