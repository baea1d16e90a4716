# Zero-shot PhraseCut test of HARIS trained on G-Ref (UMD)
# (paper: 22.93 IoU). Same model, tokenizer and test pipeline as
# training; only the test dataset changes:
#   mim test mmseg <this config> --checkpoint <trained checkpoint>
# This test_dataloader override turns any trained RIS config into a
# PhraseCut zero-shot one.
_base_ = ['./haris_sam-vit-b_1xb16-50e_refcocog-umd-480x480.py']
test_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='PhraseCutDataset',
        data_root='data/VGPhraseCut_v0',
        split='test',
        test_mode=True,
        pipeline={{_base_.test_pipeline}}))
