# PTQ4RIS W4A4 of the cris-small demo model trained on RefShapes.
_base_ = [
    '../../../../configs/demo/cris-small_tiny-rn-minilm_1xb16-2k_refshapes-160x160.py',
    '../../../../configs/_base_/quantization/ptq4ris.py',
]
ptq = dict(quant_cfg=dict(w_bits=4, a_bits=4))
