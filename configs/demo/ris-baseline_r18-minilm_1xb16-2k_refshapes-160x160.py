# The demo: the foundation baseline trained on RefShapes at 160x160 on CPU.
_base_ = [
    '../_base_/models/ris_baseline_r18_minilm.py',
    '../_base_/datasets/refshapes_bert-160.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_2k_adamw.py'
]
model = dict(data_preprocessor=dict(size=_base_.img_scale))
randomness = dict(seed=0)
