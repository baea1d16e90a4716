# HARIS on G-Ref (Google partition: val(G)):
# 25 tokens (paper) instead of 17, as the UMD config.
_base_ = ['./haris_sam-vit-b_1xb16-50e_refcocog-umd-480x480.py']
ref_dataset = dict(dataset='refcocog', split_by='google')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = dict(dataset=ref_dataset)
