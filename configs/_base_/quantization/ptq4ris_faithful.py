# PTQ4RIS reference mode: the official quantizer arithmetic with its quirks
# (the +s offset of the summed DRQ-softmax clamps, RORQ's band-0 fallback
# for unseen outliers; ptq4ris.md §4, §8), symmetric activations and
# PTQ4ViT's 3 alternating search rounds.  Symmetric steps start from
# PTQ4ViT's max|x|/(q-0.5) (observer='ptq4vit'; ptq4ris.md §6), and the
# text encoder's attention products use the official BERT-matmul quantizer:
# the lowest-MSE of the 0.999 / 0.9999 / 0.99999 percentile ranges, range
# not widened to include 0, zero point not clamped, never searched
# (ptq4ris.md §5.2; `faithful` is passed to every quantizer).  Remaining
# differences: projects/ptq4ris/README.md, "Reference vs default".
_base_ = ['./ptq4ris.py']
ptq4vit_qconfig = dict(
    w_qscheme=dict(type='UniformQuantizer', granularity='channel',
                   observer='ptq4vit'),
    a_qscheme=dict(type='UniformQuantizer', observer='ptq4vit'),
    m_qscheme=dict(type='UniformQuantizer', granularity='head', ch_axis=1,
                   observer='ptq4vit'))
bert_matmul_qscheme = dict(
    type='UniformQuantizer', symmetric=False, observer='percentile',
    percentile=(0.999, 0.9999, 0.99999), faithful=True, search_grid=None)
rorq_rules_faithful = [
    _base_.rorq_rules[0],  # RORQ on every text-encoder Linear input
    dict(pattern=r'text_encoder\..*', types=['MatMul'],
         a_qscheme=bert_matmul_qscheme, b_qscheme=bert_matmul_qscheme,
         optional=True),
]
ptq = dict(
    search=dict(rounds=3, rows=1024),
    quant_cfg=dict(
        faithful=True,
        global_qconfig=dict(_delete_=True, **ptq4vit_qconfig),
        rules=_base_.drq_rules + rorq_rules_faithful +
        _base_.first_last_fp))
