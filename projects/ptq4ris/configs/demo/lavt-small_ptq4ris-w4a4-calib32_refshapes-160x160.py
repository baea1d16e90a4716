# PTQ4RIS W4A4 of the lavt-small demo model trained on RefShapes.
_base_ = [
    '../../../../configs/demo/lavt-small_swin-32-minilm_1xb16-1500i_refshapes-160x160.py',
    '../../../../configs/_base_/quantization/ptq4ris.py',
]
ptq = dict(quant_cfg=dict(w_bits=4, a_bits=4))
