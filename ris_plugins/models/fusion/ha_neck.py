"""ETRIS's hierarchical-alignment neck (``kkakkkka/ETRIS: model/layers.py``
``HA``; BarLeRIa's ``Neck``)."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import TextFeatures, coord_features


def _deconv(cin: int, cout: int, stride: int, norm_cfg: dict,
            act_cfg: dict) -> nn.Sequential:
    """ConvTranspose (k = s = stride, no bias) + norm + act (ETRIS
    ``deconv_layer``)."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, stride, stride, bias=False),
        build_norm_layer(norm_cfg, cout)[1],
        MODELS.build(act_cfg))


@MODELS.register_module()
class HANeck(BaseModule):
    """ETRIS HA: every visual level is resampled to the middle level's grid,
    gated by the sentence through a one-key cross-attention, and the three
    are merged with CoordConv (``ris_methods.md`` 3.4)::

        s    = Linear(sent_feat)                        (1, B, C)
        f_i  = proj_i(v_i)                              (B, C, h, w)
        fq_i = f_i * MHA(q=f_i, k=v=s)                  per level
        out  = conv3x3(CoordConv3x3(conv1x1(cat[fq_3, fq_4, fq_5])))

    ``proj_3`` = conv (k = s = strides[0]), ``proj_4`` = conv (k = s =
    strides[1]), ``proj_5`` = transposed conv (k = s = strides[2]), each
    without bias + BN + ReLU (ViT: strides 1, 1, 1; RN: 2, 1, 2). With a
    single key the softmax is 1, so the attention is a channel gate
    ``W_o(W_v s + b_v) + b_o`` and its q / k projections get no gradient
    (as in ETRIS).

    Used in :class:`RefSegmentor`'s ``fusion`` slot: ``(levels, text) ->
    ((out, ), text)`` for :class:`CRISHead`. With ``extra_input`` a fourth
    level (B, C, h, w) -- BarLeRIa's side-network output -- is added to
    ``out`` (``model/segmenter.py``: ``decoder(fq + fq_side, ...)``).

    ViT-B/16 sizes (in 768 / 768 / 512, C 512, sentence 512, 8 heads):
    9,983,488 parameters; with ETRIS's GA (FFN 512) and projector the head
    is 22,671,361.

    Args:
        in_channels (Sequence[int]): Widths of the three levels.
        channels (int): C, the output width (ETRIS: ``fpn_out[1]`` = 512).
        strides (Sequence[int]): Resampling factors (above).
        text_channels (int): C', width of ``sent_feat``.
        num_heads (int): Gate attention heads (ETRIS: 8).
        extra_input (bool): Expect a fourth level to add to the output.
        norm_cfg (dict): Norm config.
        act_cfg (dict): Activation config.
        init_cfg (dict, optional): Initialisation config.

    Raises:
        ValueError: Not 3 ``in_channels`` / ``strides``; at forward, the
            wrong number of levels, levels that disagree in size after
            resampling, or widths that differ from the config.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (768, 768, 512),
                 channels: int = 512,
                 strides: Sequence[int] = (1, 1, 1),
                 text_channels: int = 512,
                 num_heads: int = 8,
                 extra_input: bool = False,
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(in_channels) != 3 or len(strides) != 3:
            raise ValueError(
                f'HANeck needs 3 in_channels and 3 strides, got '
                f'{list(in_channels)} and {list(strides)}')
        self.in_channels = list(in_channels)
        self.channels = channels
        self.text_channels = text_channels
        self.text_widths = dict(sent=text_channels)  # checked at build
        self.extra_input = extra_input
        c3, c4, c5 = in_channels
        s3, s4, s5 = strides
        self.text_proj = nn.Linear(text_channels, channels)
        self.proj3 = ConvModule(c3, channels, s3, stride=s3,
                                norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.proj4 = ConvModule(c4, channels, s4, stride=s4,
                                norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.proj5 = _deconv(c5, channels, s5, norm_cfg, act_cfg)
        self.gates = nn.ModuleList(
            nn.MultiheadAttention(channels, num_heads) for _ in range(3))
        self.aggregate = ConvModule(3 * channels, channels, 1,
                                    norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.coord_conv = ConvModule(channels + 2, channels, 3, padding=1,
                                     norm_cfg=norm_cfg, act_cfg=act_cfg)
        self.out_conv = ConvModule(channels, channels, 3, padding=1,
                                   norm_cfg=norm_cfg, act_cfg=act_cfg)

    def _check(self, visual: Sequence[Tensor], text: TextFeatures) -> None:
        want = 4 if self.extra_input else 3
        if len(visual) != want:
            raise ValueError(
                f'HANeck(extra_input={self.extra_input}) needs {want} '
                f'visual levels, got {len(visual)}')
        got = [v.shape[1] for v in visual[:3]]
        if got != self.in_channels:
            raise ValueError(f'HANeck was built for level widths '
                             f'{self.in_channels}, got {got}')
        if text.sent_feat.shape[-1] != self.text_channels:
            raise ValueError(
                f'HANeck was built for sentence width {self.text_channels}, '
                f'got {text.sent_feat.shape[-1]}')

    def forward(self, visual: Sequence[Tensor], text: TextFeatures
                ) -> Tuple[Tuple[Tensor], TextFeatures]:
        """Fuse.

        Args:
            visual (Sequence[Tensor]): v3, v4, v5 (B, C_i, h_i, w_i)
                (ViT: all (B, C_i, h, w)), plus the extra (B, C, h, w) with
                ``extra_input``.
            text (TextFeatures): sent_feat (B, C') is used.

        Returns:
            tuple: ``((out (B, C, h, w), ), text)``, the text unchanged.
        """
        self._check(visual, text)
        s = self.text_proj(text.sent_feat)[None]  # (1, B, C)
        fused = []
        for proj, gate, v in zip((self.proj3, self.proj4, self.proj5),
                                 self.gates, visual[:3]):
            f = proj(v)  # (B, C, h, w)
            b, c, h, w = f.shape
            q = f.flatten(2).permute(2, 0, 1)  # (h*w, B, C)
            g = gate(q, s, s, need_weights=False)[0]  # (h*w, B, C)
            fused.append((q * g).permute(1, 2, 0).reshape(b, c, h, w))
        sizes = {tuple(int(d) for d in f.shape[-2:]) for f in fused}
        if len(sizes) != 1:
            raise ValueError(f'HANeck levels disagree in size after '
                             f'resampling: {sorted(sizes)} (check strides)')
        x = self.aggregate(torch.cat(fused, dim=1))  # (B, C, h, w)
        x = self.coord_conv(torch.cat([x, coord_features(x)], dim=1))
        x = self.out_conv(x)  # (B, C, h, w)
        if self.extra_input:
            x = x + visual[3]
        return (x, ), text
