from .geometric import Letterbox, RefRandomFlip, swap_left_right
from .loading import (LoadRefImage, LoadRefMask, check_segmentation,
                      decode_rle_counts, decode_segmentation)
from .text import TokenizeText

__all__ = [
    'LoadRefImage', 'LoadRefMask', 'check_segmentation', 'decode_rle_counts',
    'decode_segmentation', 'Letterbox', 'RefRandomFlip', 'swap_left_right',
    'TokenizeText'
]
