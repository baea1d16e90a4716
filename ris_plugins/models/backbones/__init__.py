from .multimodal_swin import MultiModalSwin

__all__ = ['MultiModalSwin']
