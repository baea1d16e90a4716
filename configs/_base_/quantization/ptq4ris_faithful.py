# PTQ4RIS reference mode: the official quantizer arithmetic with its quirks
# (the +s offset of the summed DRQ-softmax clamps, RORQ's band-0 fallback
# for unseen outliers; ptq4ris.md §4, §8), symmetric activations and
# PTQ4ViT's 3 alternating search rounds.
_base_ = ['./ptq4ris.py']
custom_hooks = [
    dict(
        type='PTQHook',
        calibrate_steps=32,
        search=dict(rounds=3, rows=1024),
        quant_cfg=dict(
            faithful=True,
            global_qconfig=dict(
                w_qscheme=dict(type='UniformQuantizer', granularity='channel'),
                a_qscheme=dict(type='UniformQuantizer'),
                m_qscheme=dict(type='UniformQuantizer', granularity='head',
                               ch_axis=1)),
            rules=_base_.drq_rules + _base_.rorq_rules +
            _base_.first_last_fp))
]
