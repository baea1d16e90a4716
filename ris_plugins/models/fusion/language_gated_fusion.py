"""A simple vision-language fusion: pixel features gated by the sentence."""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import TextFeatures, coord_features


class WordAttentionPool(nn.Module):
    """Pool word features with ``num_heads`` learned queries, then map the
    concatenated heads to a gate vector.

    ``a = softmax_L(words @ Q)`` (B, L, H) over real words only; pooled
    ``a^T words`` (B, H, C_t) -> flatten -> MLP -> (B, C).
    """

    def __init__(self, text_channels: int, channels: int,
                 num_heads: int) -> None:
        super().__init__()
        self.query = nn.Linear(text_channels, num_heads, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(num_heads * text_channels, channels), nn.ReLU(),
            nn.Linear(channels, channels))

    def forward(self, text: TextFeatures) -> Tensor:
        scores = self.query(text.word_feats)  # (B, L, H)
        scores = scores.masked_fill(text.pad_mask[..., None], float('-inf'))
        attn = scores.softmax(dim=1)  # (B, L, H)
        pooled = torch.einsum('blh,blc->bhc', attn, text.word_feats)
        return self.mlp(pooled.flatten(1))  # (B, C)


@MODELS.register_module()
class LanguageGatedFusion(BaseModule):
    """Gate each visual level by a vector computed from the words.

    For level i: ``v = conv1x1([x_i, coords])`` (B, C, H, W); a gate ``g =
    tanh(MLP(attention-pool(words)))`` (B, C), with ``num_heads`` learned
    word queries per level (so a level can attend to the colour, the kind
    and the spatial word separately); output ``conv3x3(v * g)``. The
    coordinate channels (CoordConv, as in MAttNet and CRIS's spatial
    features) let the gate express words such as "left".

    This is the foundation baseline, not a published method; LAVT's PWAM
    and CRIS's text-gated FPN are their own modules.

    Args:
        in_channels (Sequence[int]): Channels of each visual level.
        channels (int): C, output channels of every level.
        text_channels (int): C_t, width of ``TextFeatures.word_feats``.
        num_heads (int): Word-attention queries per level.
        with_coords (bool): Concatenate coordinate channels.
        norm_cfg (dict): Norm layer config.

    Raises:
        ValueError: The number of visual levels differs from
            ``len(in_channels)`` (at forward).
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 channels: int,
                 text_channels: int,
                 num_heads: int = 4,
                 with_coords: bool = True,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = list(in_channels)
        self.text_widths = dict(word=text_channels)  # checked at build
        self.with_coords = with_coords
        extra = 2 if with_coords else 0
        self.projs = nn.ModuleList(
            ConvModule(c + extra, channels, 1, norm_cfg=norm_cfg)
            for c in in_channels)
        self.gates = nn.ModuleList(
            WordAttentionPool(text_channels, channels, num_heads)
            for _ in in_channels)
        self.outs = nn.ModuleList(
            ConvModule(channels, channels, 3, padding=1, norm_cfg=norm_cfg)
            for _ in in_channels)

    def forward(self, visual: Sequence[Tensor], text: TextFeatures
                ) -> Tuple[Tuple[Tensor, ...], TextFeatures]:
        """Fuse.

        Args:
            visual (Sequence[Tensor]): Levels (B, C_i, H_i, W_i).
            text (TextFeatures): word_feats (B, L, C_t) and pad_mask (B, L)
                are used.

        Returns:
            tuple: ``(levels (B, channels, H_i, W_i), text)``, the text
            unchanged.
        """
        if len(visual) != len(self.in_channels):
            raise ValueError(f'LanguageGatedFusion got {len(visual)} visual '
                             f'levels, expected {len(self.in_channels)}')
        outs: List[Tensor] = []
        for x, proj, gate, out in zip(visual, self.projs, self.gates,
                                      self.outs):
            if self.with_coords:
                x = torch.cat([x, coord_features(x)], dim=1)
            v = proj(x)  # (B, C, H, W)
            g = torch.tanh(gate(text))  # (B, C)
            outs.append(out(v * g[:, :, None, None]))  # (B, C, H, W)
        return tuple(outs), text
