# G-Ref (Google partition: train / val only, "val(G)") in HARIS's setting
# with 25 tokens (paper), as refcocog-umd_clip-480.py.
_base_ = ['./refcocog-umd_clip-480.py']
ref_dataset = dict(dataset='refcocog', split_by='google')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = dict(dataset=ref_dataset)
