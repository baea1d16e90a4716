# The demo: the foundation baseline trained on RefShapes at 160x160 on CPU.
_base_ = [
    '../_base_/models/ris_baseline_r18_minilm.py',
    '../_base_/datasets/refshapes_bert-160.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_2k_adamw.py'
]
# The frozen MiniLM encodes each training sentence once; later steps look
# it up (RefSegmentor text_cache_size; exact, the encoder is frozen).
model = dict(
    data_preprocessor=dict(size=_base_.img_scale), text_cache_size=20000)
randomness = dict(seed=0)
# NHWC convolutions: 1.25x the training step rate on a 2-core CPU
# (tools/analysis_tools/train_speed.py side by side, see the README).
default_hooks = dict(channels_last=dict(type='ChannelsLastHook'))
