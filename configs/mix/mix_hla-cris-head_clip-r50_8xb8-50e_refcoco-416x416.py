# Mix (a): HARIS's hierarchical Human-Like Attention fusion in place of
# CRIS's text-gated FPN, feeding CRIS's vision-language decoder and
# text-conditioned projector. Everything else is CRIS R50 on RefCOCO
# (configs/cris/cris_r50_8xb8-50e_refcoco-416x416.py): CLIP RN50 + CLIP
# text tower trained at 0.1x, 416x416 letterbox, Adam 1e-4, 50 epochs,
# sigmoid > 0.35. An untrained recipe: no numbers are claimed.
#
# Interfaces:
# * CLIPResNet levels 512 / 1024 / 1024 at strides 8 / 16 / 32 (52 / 26 /
#   13 at 416) -> HierarchicalHLA with stride-2 injection convs, so each
#   HLA output is injected into the next (coarser) level; output M_3
#   (B, 512, 13, 13) and the vision-aware words (B, 17, 512), the CLIP
#   sentence (B, 1024) unchanged;
# * glue: FeatureAdapter (neck slot) upsamples M_3 x2 to stride 16 (26 x
#   26), where CRIS decodes; no projection (widths already match);
# * CRISHead: decoder width 512 reads 512-wide words (text_channels=512),
#   the projector's kernel comes from the 1024-d CLIP sentence; logits
#   104 x 104 as CRIS.
_base_ = ['../cris/cris_r50_8xb8-50e_refcoco-416x416.py']
embed_dims = 512
model = dict(
    fusion=dict(
        _delete_=True,
        type='HierarchicalHLA',
        in_channels=[512, 1024, 1024],
        text_channels=512,
        sent_channels=1024,
        embed_dims=embed_dims,
        hla_cfg=dict(feedback_at='visual', feedback_mode='add'),
        kernel_size=3,
        stride=2,
        use_hierarchy=True,
        word_flow='mean',
        norm_cfg={{_base_.norm_cfg}}),
    neck=dict(
        type='FeatureAdapter', in_channels=embed_dims, scale_factor=2.0),
    decode_head=dict(
        in_channels=embed_dims, text_channels=embed_dims,
        sent_channels=1024))
