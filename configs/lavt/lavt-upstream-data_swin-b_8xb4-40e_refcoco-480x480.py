# LAVT on RefCOCO (UNC) with LAVT's own data pipeline (yz93/LAVT-RIS):
# the image resized with PIL bilinear (antialiased when shrinking) and the
# mask with PIL nearest (transforms.py Resize: torchvision F.resize on PIL
# images), and WordPiece ids cut at [:20], which drops [SEP] from
# sentences longer than 20 tokens (data/dataset_refer_bert.py). The default
# configs use cv2 and keep [SEP]; configs/lavt/README.md measures the
# difference. For another dataset inherit this file and set ref_dataset as
# _base_/datasets/refcoco+_bert-480.py does. Training and evaluation share
# one pipeline, as in LAVT.
_base_ = ['./lavt_swin-b_8xb4-40e_refcoco-480x480.py']
resize = dict(_base_.resize, backend='pillow')
tokenizer = dict(_base_.tokenizer, truncation='cut')
train_pipeline = [
    resize if t.type == 'Resize' else
    tokenizer if t.type == 'TokenizeText' else t
    for t in _base_.train_pipeline
]
test_pipeline = train_pipeline
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
