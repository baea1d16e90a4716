"""A generic adapter between feature interfaces: visual levels (+ text) of
one module -> the widths, grid and layout the next module reads."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import TextFeatures, resize_to

MERGES = ('none', 'sum', 'cat')
Widths = Union[int, Sequence[int]]


def _as_list(x: Widths, name: str) -> List[int]:
    """An int or a sequence of ints -> list of ints (non-empty, > 0)."""
    out = [x] if isinstance(x, int) else list(x)
    if not out or not all(isinstance(c, int) and c > 0 for c in out):
        raise ValueError(f'{name} must be a positive int or a non-empty '
                         f'sequence of them, got {x!r}')
    return out


@MODELS.register_module()
class FeatureAdapter(BaseModule):
    """Glue between feature interfaces of :class:`RefSegmentor`'s slots, so
    components of different methods can be chained from config alone.

    It reads the levels a backbone / fusion produces and the
    :class:`TextFeatures`, and hands on what the next module reads. Steps,
    in order (each optional):

    1. select levels ``in_index`` of the input levels;
    2. project level i to ``out_channels[i]`` with a 1x1 ``ConvModule``
       (``norm_cfg`` / ``act_cfg``; none by default: a linear map);
    3. resize every level to the grid of selected level ``resize_to``
       (average pooling when shrinking, bilinear when growing), then by
       ``scale_factor`` (bilinear);
    4. ``merge``: ``'none'`` (keep the levels), ``'sum'`` (elementwise sum,
       equal widths and grids) or ``'cat'`` (channel concatenation, equal
       grids);
    5. project the words ``word_feats`` (B, T, C_w) -> (B, T,
       ``text_out_channels``) and / or the sentence ``sent_feat`` (B, C_s)
       -> (B, ``sent_out_channels``) with ``nn.Linear``; the pad mask is
       kept.

    Output: ``(maps, text)``, the maps as a tuple and the (projected) text.
    It fits the ``fusion`` and the ``neck`` slot alike (``text_input =
    'features'``: :class:`RefSegmentor` passes the text explicitly).
    ``out_channels`` (property) is the width handed
    on (int after a merge or for one level, else a list), which
    :class:`RefSegmentor` compares with the decode head's ``in_channels``
    at build.

    Source: no paper; the operations are mmseg's channel-mapping /
    resize necks (``mmseg/models/necks/multilevel_neck.py``) with text.

    Args:
        in_channels (int | Sequence[int]): Widths of all input levels.
        out_channels (int | Sequence[int], optional): Width per selected
            level (an int applies to all); None keeps the widths (no
            projection).
        in_index (int | Sequence[int], optional): Levels to use (default
            all), indices into the input levels (negative allowed).
        resize_to (int, optional): Index into the *selected* levels whose
            grid all levels are resized to; None keeps each grid.
        scale_factor (float): Extra bilinear resize of every output map
            (e.g. 2 turns a stride-32 map into stride 16); 1 = none.
        merge (str): ``'none'`` | ``'sum'`` | ``'cat'``.
        text_channels (int, optional): C_w, word width in; needed with
            ``text_out_channels``.
        text_out_channels (int, optional): Word width out; None keeps the
            words.
        sent_channels (int, optional): C_s, sentence width in; needed with
            ``sent_out_channels``.
        sent_out_channels (int, optional): Sentence width out; None keeps
            it.
        norm_cfg (dict, optional): Norm of the 1x1 projections.
        act_cfg (dict, optional): Activation of the 1x1 projections.
        align_corners (bool): Of the bilinear resizes.
        init_cfg (dict, optional): Initialisation config.

    Raises:
        ValueError: Non-positive or empty widths, an ``in_index`` /
            ``resize_to`` out of range, ``out_channels`` with a length other
            than the number of selected levels, unknown ``merge`` (lists the
            valid ones), ``'sum'`` over different widths, an output width
            without its input width (``text_out_channels`` without
            ``text_channels``, same for the sentence), ``scale_factor <=
            0``; at forward, a number of levels or widths other than
            ``in_channels``, text widths other than configured, levels that
            cannot be merged because their grids differ (set
            ``resize_to``).
    """

    text_input = 'features'

    def __init__(self,
                 in_channels: Widths,
                 out_channels: Optional[Widths] = None,
                 in_index: Optional[Union[int, Sequence[int]]] = None,
                 resize_to: Optional[int] = None,
                 scale_factor: float = 1.0,
                 merge: str = 'none',
                 text_channels: Optional[int] = None,
                 text_out_channels: Optional[int] = None,
                 sent_channels: Optional[int] = None,
                 sent_out_channels: Optional[int] = None,
                 norm_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 align_corners: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.in_channels = _as_list(in_channels, 'in_channels')
        self.in_index = self._indices(in_index)
        n = len(self.in_index)
        widths = [self.in_channels[i] for i in self.in_index]
        if out_channels is not None:
            outs = _as_list(out_channels, 'out_channels')
            outs = outs * n if isinstance(out_channels, int) else outs
            if len(outs) != n:
                raise ValueError(
                    f'out_channels has {len(outs)} entries for {n} selected '
                    f'levels (in_index={self.in_index})')
            self.projs = nn.ModuleList(
                ConvModule(c, o, 1, norm_cfg=norm_cfg, act_cfg=act_cfg)
                for c, o in zip(widths, outs))
            widths = outs
        else:
            self.projs = None
        if resize_to is not None and not -n <= resize_to < n:
            raise ValueError(f'resize_to={resize_to} is outside the {n} '
                             f'selected levels')
        if scale_factor <= 0:
            raise ValueError(f'scale_factor must be > 0, got {scale_factor}')
        if merge not in MERGES:
            raise ValueError(f'unknown merge {merge!r}; valid: {MERGES}')
        if merge == 'sum' and len(set(widths)) != 1:
            raise ValueError(f"merge='sum' needs equal widths, got {widths} "
                             f'(set out_channels to one int)')
        self.resize_to = resize_to
        self.scale_factor = float(scale_factor)
        self.merge = merge
        self.align_corners = align_corners
        if merge == 'sum':
            self._out: Widths = widths[0]
        elif merge == 'cat':
            self._out = sum(widths)
        else:
            self._out = widths[0] if n == 1 else widths
        self.text_channels = text_channels
        self.sent_channels = sent_channels
        self.text_widths = {  # checked at build against the text encoder
            k: v
            for k, v in (('word', text_channels), ('sent', sent_channels))
            if v is not None
        }
        self.word_proj = self._linear('text', text_channels,
                                      text_out_channels)
        self.sent_proj = self._linear('sent', sent_channels,
                                      sent_out_channels)

    def _indices(self, in_index) -> List[int]:
        n = len(self.in_channels)
        if in_index is None:
            return list(range(n))
        idx = [in_index] if isinstance(in_index, int) else list(in_index)
        if not idx:
            raise ValueError('in_index must not be empty')
        for i in idx:
            if not -n <= i < n:
                raise ValueError(f'in_index {i} is outside the {n} input '
                                 f'levels (in_channels={self.in_channels})')
        return [i % n for i in idx]

    @staticmethod
    def _linear(name: str, cin: Optional[int],
                cout: Optional[int]) -> Optional[nn.Linear]:
        if cout is None:
            return None
        if cin is None:
            raise ValueError(f'{name}_out_channels={cout} needs '
                             f'{name}_channels (the input width)')
        return nn.Linear(cin, cout)

    @property
    def out_channels(self) -> Widths:
        """Width(s) of the maps handed on."""
        return self._out

    def _check(self, levels: Sequence[Tensor]) -> None:
        got = [x.shape[1] for x in levels]
        if got != self.in_channels:
            raise ValueError(f'FeatureAdapter was built for level widths '
                             f'{self.in_channels}, got {got}')

    def _text(self, text: TextFeatures) -> TextFeatures:
        words, sent = text.word_feats, text.sent_feat
        for name, proj, x, want in (
                ('word', self.word_proj, words, self.text_channels),
                ('sentence', self.sent_proj, sent, self.sent_channels)):
            if proj is not None and x.shape[-1] != want:
                raise ValueError(f'FeatureAdapter was built for {name} '
                                 f'width {want}, got {x.shape[-1]}')
        if self.word_proj is not None:
            words = self.word_proj(words)  # (B, T, C_w')
        if self.sent_proj is not None:
            sent = self.sent_proj(sent)  # (B, C_s')
        return TextFeatures(words, sent, text.pad_mask)

    def _merge(self, maps: List[Tensor]) -> List[Tensor]:
        if self.merge == 'none':
            return maps
        sizes = {tuple(int(d) for d in x.shape[-2:]) for x in maps}
        if len(sizes) != 1:
            raise ValueError(f'FeatureAdapter cannot {self.merge!r}-merge '
                             f'levels of different grids {sorted(sizes)} '
                             f'(set resize_to)')
        if self.merge == 'sum':
            return [torch.stack(maps).sum(0)]  # (B, C, h, w)
        return [torch.cat(maps, dim=1)]  # (B, sum C_i, h, w)

    def forward(self, inputs: Sequence[Tensor], text: Optional[TextFeatures]
                ) -> Tuple[Tuple[Tensor, ...], Optional[TextFeatures]]:
        """Adapt.

        Args:
            inputs (Sequence[Tensor]): Levels (B, C_i, h_i, w_i).
            text (TextFeatures, optional): The text.

        Returns:
            tuple: ``(maps, text)``: the output maps (B, C'_i, h'_i, w'_i)
            (one after a merge) and the text with projected widths.
        """
        levels = list(inputs)
        self._check(levels)
        maps = [levels[i] for i in self.in_index]
        if self.projs is not None:
            maps = [p(x) for p, x in zip(self.projs, maps)]  # (B, C'_i, ..)
        if self.resize_to is not None:
            size = maps[self.resize_to].shape[-2:]
            maps = [resize_to(x, size, self.align_corners) for x in maps]
        if self.scale_factor != 1.0:
            maps = [
                F.interpolate(x, scale_factor=self.scale_factor,
                              mode='bilinear',
                              align_corners=self.align_corners)
                for x in maps
            ]
        maps = self._merge(maps)
        return tuple(maps), None if text is None else self._text(text)
