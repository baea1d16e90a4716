from .clip_resnet import CLIPResNet, DenseAttentionPool2d
from .multimodal_swin import MultiModalSwin

__all__ = ['CLIPResNet', 'DenseAttentionPool2d', 'MultiModalSwin']
