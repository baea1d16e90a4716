# G-Ref (Google partition): train / val only ("val(G)"); split by object.
_base_ = ['./refcoco_unc.py']
ref_dataset = dict(dataset='refcocog', split_by='google')
train_dataloader = dict(dataset=dict(**ref_dataset))
val_dataloader = dict(dataset=dict(**ref_dataset))
test_dataloader = val_dataloader
