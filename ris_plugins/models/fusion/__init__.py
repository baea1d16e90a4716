from .cris_fpn import CRISFPN
from .language_gated_fusion import LanguageGatedFusion, coord_features
from .pwam import PWAM
from .hierarchical_fusion import HierarchicalHLA
from .hla import HLABlock

__all__ = ['CRISFPN', 'LanguageGatedFusion', 'PWAM', 'coord_features']
