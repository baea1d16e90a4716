# Baseline: percentile clipping (99.99th, both tails) of activations and
# attention operands (asymmetric, per tensor); min-max weights (symmetric,
# per output channel); no search.
_base_ = ['./minmax.py']
custom_hooks = [
    dict(
        type='PTQHook',
        calibrate_steps=32,
        quant_cfg=dict(
            global_qconfig=dict(
                w_qscheme=dict(type='UniformQuantizer', granularity='channel',
                               observer='minmax'),
                a_qscheme=dict(type='UniformQuantizer', symmetric=False,
                               observer='percentile', percentile=0.9999),
                m_qscheme=dict(type='UniformQuantizer', symmetric=False,
                               observer='percentile', percentile=0.9999)),
            rules=_base_.first_last_fp))
]
