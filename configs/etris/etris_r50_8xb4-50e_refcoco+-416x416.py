# ETRIS RN50 on RefCOCO+ (UNC). Validation uses val (the upstream
# RefCOCO+ config validates on testB, which selects the checkpoint on a
# test split).
_base_ = ['./etris_r50_8xb4-50e_refcoco-416x416.py']
ref_dataset = dict(dataset='refcoco+', split_by='unc')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = dict(dataset=ref_dataset)
