# CRIS RN50 on G-Ref (UMD): 22 tokens instead of 17.
_base_ = [
    '../_base_/models/cris_r50.py',
    '../_base_/datasets/refcocog_umd_clip-416.py',
    '../_base_/schedules/schedule_50e_adam_step35.py'
]
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    text_encoder=dict(context_length=_base_.context_length))
# CRIS trains with SyncBN (DDP) and AMP.
sync_bn = 'torch'
# CRIS's backbone is the whole CLIP model (visual and text), trained at
# 0.1x except the two positional embeddings.
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'text_encoder': dict(lr_mult=0.1),
            'attnpool.positional_embedding': dict(lr_mult=1.0),
            'embeddings.position_embedding': dict(lr_mult=1.0),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=64)
