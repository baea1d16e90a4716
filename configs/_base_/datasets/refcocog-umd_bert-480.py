# G-Ref (UMD partition: val(U) / test(U)) in LAVT's setting (refcoco_bert-480.py).
_base_ = ['./refcoco_bert-480.py']
ref_dataset = dict(dataset='refcocog', split_by='umd')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = val_dataloader
