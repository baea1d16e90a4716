# RefCOCO+ (UNC) in HARIS's setting (refcoco_clip-480.py), 17 tokens,
# validated on val.
_base_ = ['./refcoco_clip-480.py']
ref_dataset = dict(dataset='refcoco+', split_by='unc')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = dict(dataset=ref_dataset)
