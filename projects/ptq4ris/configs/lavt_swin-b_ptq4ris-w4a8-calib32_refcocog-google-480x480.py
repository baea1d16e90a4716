# PTQ4RIS W4A8 of LAVT (Swin-B, BERT-base) on refcocog-google: the FP config plus
# the PTQ4RIS method base plus the bit-width base.  Run with
#   mim test mmseg <this config> --checkpoint <fp lavt checkpoint>
_base_ = [
    '../../../configs/lavt/lavt_swin-b_8xb4-40e_refcocog-google-480x480.py',
    '../../../configs/_base_/quantization/ptq4ris.py',
    '../../../configs/_base_/quantization/w4a8.py',
]
