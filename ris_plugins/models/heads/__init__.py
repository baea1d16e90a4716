from .cris_head import CRISHead, TextConditionedProjector
from .lavt_head import LAVTHead
from .vl_transformer_decoder import (VLTransformerDecoder,
                                     VLTransformerDecoderLayer, sine_pos_1d,
                                     sine_pos_2d)
from .query_mask_head import QueryMaskHead

__all__ = [
    'CRISHead', 'LAVTHead', 'TextConditionedProjector',
    'VLTransformerDecoder', 'VLTransformerDecoderLayer', 'sine_pos_1d',
    'sine_pos_2d'
]
