from .lavt_head import LAVTHead

__all__ = ['LAVTHead']
