# Baseline: OMSE (Choukroun et al., ICCVW 2019): for each quantizer the
# clipping range minimising ||x - Q(x)||^2; no output-aware search.
_base_ = ['./minmax.py']
ptq = dict(
    quant_cfg=dict(
        global_qconfig=dict(
            _delete_=True,
            w_qscheme=dict(type='UniformQuantizer', granularity='channel',
                           observer='omse'),
            a_qscheme=dict(type='UniformQuantizer', symmetric=False,
                           observer='omse'),
            m_qscheme=dict(type='UniformQuantizer', symmetric=False,
                           observer='omse'))))
