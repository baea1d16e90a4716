# RefCOCO+ (UNC): train / val / testA / testB; no absolute-location words.
_base_ = ['./refcoco_unc.py']
ref_dataset = dict(dataset='refcoco+', split_by='unc')
train_dataloader = dict(dataset=dict(**ref_dataset))
val_dataloader = dict(dataset=dict(**ref_dataset))
test_dataloader = val_dataloader
