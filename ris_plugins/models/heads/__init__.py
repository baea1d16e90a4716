from .base_ref_decode_head import BaseRefDecodeHead
from .cris_head import CRISHead, TextConditionedProjector
from .lavt_head import LAVTHead
from .query_mask_head import QueryMaskHead
from .vl_transformer_decoder import (VLTransformerDecoder,
                                     VLTransformerDecoderLayer)

__all__ = [
    'BaseRefDecodeHead', 'CRISHead', 'LAVTHead', 'QueryMaskHead',
    'TextConditionedProjector', 'VLTransformerDecoder',
    'VLTransformerDecoderLayer'
]
