# CRIS RN101 on RefCOCO+ (UNC), validated on val.
_base_ = ['./cris_r101_8xb8-50e_refcoco-416x416.py']
ref_dataset = dict(dataset='refcoco+', split_by='unc')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = dict(dataset=ref_dataset)
