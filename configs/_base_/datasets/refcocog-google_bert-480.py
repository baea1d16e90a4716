# G-Ref (Google partition: train / val only) in LAVT's setting (refcoco_bert-480.py).
_base_ = ['./refcoco_bert-480.py']
ref_dataset = dict(dataset='refcocog', split_by='google')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = val_dataloader
