_base_ = ['./lavt_swin-b_8xb4-40e_refcoco-480x480.py']
ref_dataset = dict(dataset='refcocog', split_by='google')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = val_dataloader
