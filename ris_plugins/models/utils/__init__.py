from .frozen import FrozenEvalMixin
from .positional import coord_features, sine_pos_1d, sine_pos_2d
from .resize import resize_to
from .text_cache import TextFeatureCache
from .text_features import TextFeatures
from .widths import check_text_widths, check_widths, text_widths_of

__all__ = [
    'FrozenEvalMixin', 'TextFeatureCache', 'TextFeatures', 'check_text_widths', 'check_widths',
    'coord_features', 'resize_to', 'sine_pos_1d', 'sine_pos_2d',
    'text_widths_of'
]
