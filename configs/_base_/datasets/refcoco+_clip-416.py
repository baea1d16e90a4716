# RefCOCO+ (UNC: train / val / testA / testB; no absolute-location words)
# in the CLIP-based RIS setting of refcoco_clip-416.py (17 tokens). The
# validation split is val (the upstream CRIS / ETRIS / BarLeRIa RefCOCO+
# configs validate on testB, which selects the checkpoint on a test split).
_base_ = ['./refcoco_clip-416.py']
ref_dataset = dict(dataset='refcoco+', split_by='unc')
train_dataloader = dict(dataset=ref_dataset)
val_dataloader = dict(dataset=ref_dataset)
test_dataloader = dict(dataset=ref_dataset)
