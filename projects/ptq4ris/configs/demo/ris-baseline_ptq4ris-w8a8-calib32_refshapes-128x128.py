# PTQ4RIS W8A8 of the `make demo` model (the ris-baseline trained on
# RefShapes at 128x128, bf16, 2.5k iterations): the first of the three
# commands from the demo to an INT8 .onnx file (projects/ptq4ris/README.md).
_base_ = [
    '../../../../configs/demo/ris-baseline_r18-minilm_1xb16-amp-2500i_refshapes-128x128.py',
    '../../../../configs/_base_/quantization/ptq4ris.py',
]
ptq = dict(quant_cfg=dict(w_bits=8, a_bits=8))
