"""The structure every text encoder returns."""
from typing import NamedTuple

from torch import Tensor


class TextFeatures(NamedTuple):
    """Outputs of a text encoder.

    Attributes:
        word_feats (Tensor): (B, L, C) per-token features.
        sent_feat (Tensor): (B, C') sentence feature, taken where the method
            defines it (e.g. mean over real tokens, [CLS], or CLIP's EOT
            token followed by ``text_projection``).
        pad_mask (Tensor): (B, L) bool, True at padding positions (the
            ``key_padding_mask`` convention of ``nn.MultiheadAttention``).
    """
    word_feats: Tensor
    sent_feat: Tensor
    pad_mask: Tensor
