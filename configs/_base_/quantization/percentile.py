# Baseline: percentile clipping (99.99th, both tails) of activations and
# attention operands (asymmetric, per tensor); min-max weights (symmetric,
# per output channel); no search.
_base_ = ['./minmax.py']
ptq = dict(
    quant_cfg=dict(
        global_qconfig=dict(
            _delete_=True,
            w_qscheme=dict(type='UniformQuantizer', granularity='channel',
                           observer='minmax'),
            a_qscheme=dict(type='UniformQuantizer', symmetric=False,
                           observer='percentile', percentile=0.9999),
            m_qscheme=dict(type='UniformQuantizer', symmetric=False,
                           observer='percentile', percentile=0.9999))))
