# Baseline: min-max observers (mmrazor's MinMaxObserver /
# PerChannelMinMaxObserver), no search.  Weights symmetric per output
# channel, activations and attention operands asymmetric per tensor.
#
# All PTQ settings are the one top-level dict `ptq` (read by PTQHook; keys:
# ris_plugins/quantization/settings.py), so a config changes any of them
# by merging, e.g. the bit widths, which every quantized config sets:
#   _base_ = [<model config>, '.../quantization/minmax.py']
#   ptq = dict(quant_cfg=dict(w_bits=4, a_bits=4))
# or on the command line: --cfg-options ptq.quant_cfg.w_bits=8

# Kept as PTQ4RIS keeps them (ptq4ris.md §2): the image input of the first
# layer and the final classifier stay FP.  `optional`: each pattern applies
# to some models only.
first_last_fp = [
    dict(pattern=r'backbone\.(conv1|stem\.0|patch_embed\.projection)',
         a_qscheme=None, optional=True),
    dict(pattern=r'.*conv_seg', skip=True, optional=True),
]
custom_hooks = [dict(type='PTQHook')]
ptq = dict(
    calibrate_steps=32,
    quant_cfg=dict(
        global_qconfig=dict(
            w_qscheme=dict(type='UniformQuantizer', granularity='channel',
                           observer='minmax'),
            a_qscheme=dict(type='UniformQuantizer', symmetric=False,
                           observer='minmax'),
            m_qscheme=dict(type='UniformQuantizer', symmetric=False,
                           observer='minmax')),
        rules=first_last_fp))
