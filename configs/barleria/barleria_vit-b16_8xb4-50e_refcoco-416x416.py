# BarLeRIa (full: SNF + LIM both directions + GST) with frozen CLIP
# ViT-B/16 on RefCOCO (UNC): 416x416 letterbox (padded with CLIP's mean),
# CLIP BPE to 17 tokens, no augmentation, batch 8 GPUs x 4 = 32, Adam 1e-4
# for every trainable parameter (no weight decay), 50 epochs with x0.1 at
# epoch 35, mIoU and Pr@X (IoU > X) at the original resolution with
# sigmoid > 0.35. The loss is BCE + the side network's reconstruction loss.
# See configs/_base_/models/barleria_vit-b16.py for the adapters and the
# fixes, and configs/_base_/models/etris_vit-b16.py for loading CLIP.
#
# Only SNF, LIM, GST, the HA neck, the GA decoder, the projector and the two
# positional embeddings train (requires_grad=False elsewhere, set by
# DualEncoderBackbone); the frozen towers stay in eval mode. The no-GST
# variant is projects/barleria/configs/barleria-no-gst_*.py.
_base_ = [
    '../_base_/models/barleria_vit-b16.py',
    '../_base_/datasets/refcoco_clip-416.py',
    '../_base_/schedules/etris_8xb4-50e.py'
]
train_dataloader = dict(batch_size=4)
model = dict(
    data_preprocessor=dict(size=_base_.img_scale),
    backbone=dict(text=dict(context_length=_base_.context_length)))
