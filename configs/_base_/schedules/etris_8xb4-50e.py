# ETRIS's training recipe (kkakkkka/ETRIS, config/*/bridge_*.yaml), also
# BarLeRIa's (NastrondAd/BarLeRIa, config/*/barleria_v16.yaml):
# schedule_50e_adam_step35.py (AMP, Adam 1e-4 for every trainable parameter,
# no weight decay, 50 epochs, x0.1 at epoch 35) with SyncBN under DDP and
# the learning rate not scaled automatically (8 GPUs x 4 = 32). No
# paramwise_cfg: every trainable parameter uses the base lr (lr_multi 1);
# the frozen towers have requires_grad=False and get no update.
_base_ = ['./schedule_50e_adam_step35.py']
sync_bn = 'torch'
auto_scale_lr = dict(enable=False, base_batch_size=32)
