from .geometric import Letterbox, RefRandomFlip, swap_left_right
from .loading import LoadRefMask, decode_segmentation
from .text import TokenizeText

__all__ = [
    'LoadRefMask', 'decode_segmentation', 'Letterbox', 'RefRandomFlip',
    'swap_left_right', 'TokenizeText'
]
