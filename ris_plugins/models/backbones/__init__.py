from .clip_resnet import CLIPResNet, DenseAttentionPool2d
from .clip_vit import CLIPViT
from .dual_encoder import (VISUAL_TOWER_DRIVERS, DualEncoderBackbone,
                           DualEncoderOutput, DualEncoderState,
                           register_visual_tower)
from .multimodal_swin import MultiModalSwin
from .sam_vit import SAMViT

__all__ = [
    'CLIPResNet', 'CLIPViT', 'DenseAttentionPool2d', 'DualEncoderBackbone',
    'DualEncoderOutput', 'DualEncoderState', 'MultiModalSwin', 'SAMViT',
    'VISUAL_TOWER_DRIVERS', 'register_visual_tower'
]
