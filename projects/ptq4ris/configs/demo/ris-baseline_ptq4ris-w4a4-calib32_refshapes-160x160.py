# PTQ4RIS W4A4 of the ris-baseline demo model trained on RefShapes.
_base_ = [
    '../../../../configs/demo/ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py',
    '../../../../configs/_base_/quantization/ptq4ris.py',
]
ptq = dict(quant_cfg=dict(w_bits=4, a_bits=4))
