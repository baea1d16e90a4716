# CRIS's training recipe (DerrickWang005/CRIS.pytorch, config/*/cris_r50.yaml,
# train.py): schedule_50e_adam_step35.py (AMP, Adam 1e-4, 50 epochs, x0.1
# at epoch 35) with SyncBN under DDP, the CLIP encoders at 0.1x the base lr
# and the learning rate not scaled automatically (8 GPUs x 8 = 64). CRIS's
# backbone is the whole CLIP model (visual and text), trained at 0.1x except
# the two positional embeddings. The lr multipliers name CRIS's model slots
# (`backbone`, `text_encoder`), so this base goes with
# _base_/models/cris_*.py.
_base_ = ['./schedule_50e_adam_step35.py']
sync_bn = 'torch'
optim_wrapper = dict(
    paramwise_cfg=dict(
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'text_encoder': dict(lr_mult=0.1),
            'attnpool.positional_embedding': dict(lr_mult=1.0),
            'embeddings.position_embedding': dict(lr_mult=1.0),
        }))
auto_scale_lr = dict(enable=False, base_batch_size=64)
