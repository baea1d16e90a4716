from .pretrained import resolve_pretrained
from .safe_checkpoint import safe_torch_load

__all__ = ['resolve_pretrained', 'safe_torch_load']
