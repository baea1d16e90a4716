# RefCOCO+ (UNC) in LAVT's setting (refcoco_bert-480.py).
_base_ = ['./refcoco_bert-480.py']
ref_dataset = dict(dataset='refcoco+', split_by='unc')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = val_dataloader
