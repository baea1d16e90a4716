# PTQ4RIS (Jiang et al., ICRA 2025; ptq4ris.md): DRQ twin-uniform quantizers
# on post-Softmax and post-GELU activations, RORQ banded quantizers on the
# text encoder's Linear inputs, and an output-aware search of every step
# (objective: ris_plugins/quantization/calibrate.py).  This is the default
# mode (quirks fixed); ptq4ris_faithful.py reproduces the official
# arithmetic.  Set the bits in the quantized config:
#   _base_ = [<model config>, '.../quantization/ptq4ris.py']
#   ptq = dict(quant_cfg=dict(w_bits=4, a_bits=4))
_base_ = ['./minmax.py']
ptq4ris_qconfig = dict(
    w_qscheme=dict(type='UniformQuantizer', granularity='channel'),
    a_qscheme=dict(type='UniformQuantizer', symmetric=False),
    m_qscheme=dict(type='UniformQuantizer', granularity='head', ch_axis=1))
drq_rules = [
    # DRQ-softmax: the post-Softmax operand of every softmax(.) V
    dict(pattern=r'.*matmul2', types=['MatMul'],
         a_qscheme=dict(type='TwinUniformSoftmaxQuantizer'), optional=True),
    # DRQ-GELU: input of the second MLP Linear (post-GELU) of mmpretrain
    # FFNs, CLIP MLPs and BERT layers
    dict(pattern=r'.*(ffn\.layers\.1|mlp\.fc2|(?<!attention)\.output\.dense)',
         types=['Linear'], a_qscheme=dict(type='TwinUniformGELUQuantizer'),
         optional=True),
]
rorq_rules = [
    # RORQ: every Linear input of the text encoder
    dict(pattern=r'text_encoder\..*', types=['Linear'],
         a_qscheme=dict(type='RORQQuantizer'), optional=True),
    # text attention products: asymmetric per tensor, percentile clipping
    dict(pattern=r'text_encoder\..*', types=['MatMul'],
         a_qscheme=dict(type='UniformQuantizer', symmetric=False,
                        observer='percentile'),
         b_qscheme=dict(type='UniformQuantizer', symmetric=False,
                        observer='percentile'),
         optional=True),
]
ptq = dict(
    search=dict(rounds=1, rows=256),
    quant_cfg=dict(
        faithful=False,
        global_qconfig=dict(_delete_=True, **ptq4ris_qconfig),
        rules=drq_rules + rorq_rules + _base_.first_last_fp))
