# HARIS on RefCOCO+ (UNC), validated on val; 17 tokens as RefCOCO.
_base_ = ['./haris_sam-vit-b_1xb16-50e_refcoco-480x480.py']
ref_dataset = dict(dataset='refcoco+', split_by='unc')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = dict(dataset=ref_dataset)
