from .cris_fpn import CRISFPN
from .ha_neck import HANeck
from .hierarchical_fusion import HierarchicalHLA
from .hla import HLABlock
from .language_gated_fusion import LanguageGatedFusion, WordAttentionPool
from .pwam import PWAM, PixelWordAttention

__all__ = [
    'CRISFPN', 'HANeck', 'HLABlock', 'HierarchicalHLA', 'LanguageGatedFusion',
    'PWAM', 'PixelWordAttention', 'WordAttentionPool'
]
