from .ha_neck import HANeck

__all__ = ['HANeck']
