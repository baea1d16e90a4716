# ETRIS with frozen CLIP RN101 on RefCOCO+ (UNC), validated on val; see
# etris_r101_8xb4-50e_refcoco-416x416.py for the RN101 widths.
_base_ = ['./etris_r101_8xb4-50e_refcoco-416x416.py']
ref_dataset = dict(dataset='refcoco+', split_by='unc')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = dict(dataset=ref_dataset)
