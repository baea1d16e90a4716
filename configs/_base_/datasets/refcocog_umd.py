# G-Ref (UMD partition): train / val / test ("val(U)", "test(U)").
_base_ = ['./refcoco_unc.py']
ref_dataset = dict(dataset='refcocog', split_by='umd')
train_dataloader = dict(dataset=dict(**ref_dataset))
val_dataloader = dict(dataset=dict(**ref_dataset))
test_dataloader = val_dataloader
