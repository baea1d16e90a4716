from .clip_resnet import CLIPResNet, DenseAttentionPool2d
from .clip_vit import CLIPViT
from .multimodal_swin import MultiModalSwin

__all__ = ['CLIPResNet', 'CLIPViT', 'DenseAttentionPool2d', 'MultiModalSwin']
