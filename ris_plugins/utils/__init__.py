from .pretrained import resolve_pretrained

__all__ = ['resolve_pretrained']
