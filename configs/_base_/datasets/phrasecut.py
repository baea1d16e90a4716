# VGPhraseCut (Wu et al., CVPR 2020) in its official layout
# (ChenyunWu/PhraseCutDataset, data/VGPhraseCut_v0/): refer_{split}.json,
# image_data_split.json and the Visual Genome images as
# images/<image_id>.jpg; see configs/haris/README.md. Evaluation only:
# test split, one sample per phrase, IoU at the original resolution.
# The default pipeline tokenizes with CLIP BPE to 17 tokens and letterboxes
# to 480x480; a trained method's zero-shot config replaces the test
# dataloader's dataset and keeps its own test pipeline (see
# configs/haris/haris-zeroshot-phrasecut_*.py).
dataset_type = 'PhraseCutDataset'
data_root = 'data/VGPhraseCut_v0'
img_scale = (480, 480)
tokenizer = dict(type='TokenizeText', tokenizer='clip', context_length=17)
# EXIF orientation ignored, unreadable images named (see refcoco_unc.py).
load_image = dict(type='LoadRefImage', color_type='color_ignore_orientation')
meta_keys = ('img_path', 'ori_shape', 'img_shape', 'pad_shape',
             'scale_factor', 'flip', 'flip_direction', 'img_padding_size',
             'text', 'text_tokens', 'text_mask', 'ref_id', 'sent_id',
             'ann_id', 'image_id')
test_pipeline = [
    load_image,
    dict(type='Letterbox', scale=img_scale),
    dict(type='LoadRefMask'),
    tokenizer,
    dict(type='PackSegInputs', meta_keys=meta_keys),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        test_mode=True,
        pipeline=test_pipeline))
val_dataloader = test_dataloader
test_evaluator = dict(type='RefSegMetric')
val_evaluator = test_evaluator
