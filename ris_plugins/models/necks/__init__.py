from .feature_adapter import FeatureAdapter

__all__ = ['FeatureAdapter']
