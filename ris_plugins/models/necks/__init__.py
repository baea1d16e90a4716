from .feature_adapter import FeatureAdapter
from .ha_neck import HANeck

__all__ = ['FeatureAdapter', 'HANeck']
