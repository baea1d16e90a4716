from .clip_resnet import CLIPResNet, DenseAttentionPool2d
from .clip_vit import CLIPViT
from .dual_encoder import (DualEncoderBackbone, DualEncoderOutput,
                           DualEncoderState)
from .multimodal_swin import MultiModalSwin
from .sam_vit import SAMViT

__all__ = [
    'CLIPResNet', 'CLIPViT', 'DenseAttentionPool2d', 'DualEncoderBackbone',
    'DualEncoderOutput', 'DualEncoderState', 'MultiModalSwin', 'SAMViT'
]
