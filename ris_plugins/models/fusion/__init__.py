from .language_gated_fusion import LanguageGatedFusion, coord_features

__all__ = ['LanguageGatedFusion', 'coord_features']
