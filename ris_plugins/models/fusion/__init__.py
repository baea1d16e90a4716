from .language_gated_fusion import LanguageGatedFusion, coord_features
from .pwam import PWAM

__all__ = ['LanguageGatedFusion', 'PWAM', 'coord_features']
