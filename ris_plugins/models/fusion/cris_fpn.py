"""CRIS's text-gated FPN neck (``model/layers.py`` ``FPN``)."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import TextFeatures
from ..utils import coord_features


def norm_1d_cfg(norm_cfg: dict) -> dict:
    """The 1-D counterpart of a 2-D norm config: ``BN`` -> ``BN1d``
    (``nn.BatchNorm2d`` rejects (B, C) inputs); SyncBN and others work on
    any rank and are returned unchanged."""
    if norm_cfg['type'] in ('BN', 'BN2d'):
        return dict(norm_cfg, type='BN1d')
    return dict(norm_cfg)


@MODELS.register_module()
class CRISFPN(BaseModule):
    """CRIS's multi-modal FPN: the sentence gates the stride-32 level, which
    then flows top-down into the stride-16 and stride-8 levels; the three
    are merged at stride 16 with coordinate features (CoordConv).

    Source: CRIS ``model/layers.py`` ``FPN`` / ``CoordConv``;
    ``shared/docs/ris_methods.md`` 2.3. Every ``conv`` is conv (no bias) +
    BN + ReLU; widths for RN50 in brackets (``in_channels`` =
    (C3, C4, C5) = (512, 1024, 1024), ``out_channels`` = (O3, O4, O5) =
    (256, 512, 1024))::

        s  = ReLU(BN1d(Linear_nobias(sent_feat)))          (B, O5)
        f5 = ReLU(BN(conv1x1(v5) * s))                     (B, O5, H/32)
        f4 = conv1x1(cat[conv3x3(v4), up2(f5)])            (B, O4, H/16)
        f3 = conv1x1(cat[avgpool2(conv3x3(v3)), f4])       (B, O4, H/16)
        q  = conv1x1(cat[conv3x3(f3), conv3x3(f4),
                         up2(conv3x3(f5))])                (B, O4, H/16)
        out = conv3x3(conv3x3(cat[q, x, y]))               (B, O4, H/16)

    ``up2`` is bilinear (``align_corners=False``) to the stride-16 size and
    ``avgpool2`` is an adaptive average pool to that size: both equal
    CRIS's fixed factor-2 operations when the sizes divide (e.g. 52/26/13
    at 416), and they also work when they do not. The sentence is used
    nowhere else; the text is handed on unchanged to the head.

    Args:
        in_channels (Sequence[int]): (C3, C4, C5) of the backbone levels at
            strides 8 / 16 / 32.
        out_channels (Sequence[int]): (O3, O4, O5); O4 is the output width.
        text_channels (int, optional): C', width of
            ``TextFeatures.sent_feat``; default C5 (CRIS projects the
            sentence with ``Linear(in_channels[2], out_channels[2])``).
        norm_cfg (dict): 2-D norm config (BN -> BN1d for the text branch).
        act_cfg (dict): Activation config.
        init_cfg (dict, optional): Initialisation config.

    Raises:
        ValueError: ``in_channels`` / ``out_channels`` without 3 entries;
            at forward, not 3 visual levels or a sentence feature whose
            width is not ``text_channels``.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (512, 1024, 1024),
                 out_channels: Sequence[int] = (256, 512, 1024),
                 text_channels: Optional[int] = None,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(in_channels) != 3 or len(out_channels) != 3:
            raise ValueError(
                f'CRISFPN needs 3 in_channels and 3 out_channels (strides '
                f'8/16/32), got {list(in_channels)} and {list(out_channels)}')
        c3, c4, c5 = in_channels
        o3, o4, o5 = out_channels
        self.in_channels = list(in_channels)
        self.out_channels = o4
        self.text_channels = text_channels or c5
        self.text_widths = dict(sent=self.text_channels)  # checked at build

        def conv(cin: int, cout: int, k: int) -> ConvModule:
            return ConvModule(cin, cout, k, padding=k // 2,
                              norm_cfg=norm_cfg, act_cfg=act_cfg)

        self.text_proj = nn.Sequential(
            nn.Linear(self.text_channels, o5, bias=False),
            build_norm_layer(norm_1d_cfg(norm_cfg), o5)[1], nn.ReLU())
        self.v5_proj = conv(c5, o5, 1)
        self.gate_norm = nn.Sequential(
            build_norm_layer(norm_cfg, o5)[1], nn.ReLU())
        self.v4_proj = conv(c4, o4, 3)
        self.f4_fuse = conv(o4 + o5, o4, 1)
        self.v3_proj = conv(c3, o3, 3)
        self.f3_fuse = conv(o3 + o4, o4, 1)
        self.q3_proj = conv(o4, o4, 3)
        self.q4_proj = conv(o4, o4, 3)
        self.q5_proj = conv(o5, o4, 3)
        self.aggregate = conv(3 * o4, o4, 1)
        self.coord_conv = conv(o4 + 2, o4, 3)
        self.out_conv = conv(o4, o4, 3)

    @staticmethod
    def _up(x: Tensor, size: Tuple[int, int]) -> Tensor:
        return F.interpolate(x, size=size, mode='bilinear',
                             align_corners=False)

    def _check(self, visual: Sequence[Tensor], text: TextFeatures) -> None:
        if len(visual) != 3:
            raise ValueError(f'CRISFPN needs 3 visual levels (strides '
                             f'8/16/32), got {len(visual)}')
        if text.sent_feat.shape[-1] != self.text_channels:
            raise ValueError(
                f'CRISFPN was built for sentence features of width '
                f'{self.text_channels}, got {text.sent_feat.shape[-1]} '
                f'(set text_channels to the text encoder projection width)')

    def forward(self, visual: Sequence[Tensor], text: TextFeatures
                ) -> Tuple[Tuple[Tensor], TextFeatures]:
        """Fuse.

        Args:
            visual (Sequence[Tensor]): v3 (B, C3, H/8, W/8), v4 (B, C4,
                H/16, W/16), v5 (B, C5, H/32, W/32).
            text (TextFeatures): sent_feat (B, C') is used.

        Returns:
            tuple: ``((fused (B, O4, H/16, W/16), ), text)``, the text
            unchanged.
        """
        self._check(visual, text)
        v3, v4, v5 = visual
        # plain ints, so traced exports (ONNX) see a constant pooling size
        size = tuple(int(d) for d in v4.shape[-2:])  # stride 16
        s = self.text_proj(text.sent_feat)[:, :, None, None]  # (B, O5, 1, 1)
        f5 = self.gate_norm(self.v5_proj(v5) * s)  # (B, O5, H/32, W/32)
        f4 = self.f4_fuse(torch.cat(
            [self.v4_proj(v4), self._up(f5, size)], dim=1))  # (B, O4, H/16)
        f3 = F.adaptive_avg_pool2d(self.v3_proj(v3), size)  # (B, O3, H/16)
        f3 = self.f3_fuse(torch.cat([f3, f4], dim=1))  # (B, O4, H/16)
        q = torch.cat([
            self.q3_proj(f3),
            self.q4_proj(f4),
            self._up(self.q5_proj(f5), size)
        ], dim=1)  # (B, 3*O4, H/16, W/16)
        q = self.aggregate(q)  # (B, O4, H/16, W/16)
        q = self.coord_conv(torch.cat([q, coord_features(q)], dim=1))
        return (self.out_conv(q), ), text  # (B, O4, H/16, W/16)
