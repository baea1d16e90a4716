"""HARIS's hierarchical fusion: one HLA block per visual level, each
block's output injected into the next level's input."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import TextFeatures, resize_to
from .hla import HLABlock

WORD_FLOWS = ('mean', 'chain')


@MODELS.register_module()
class HierarchicalHLA(BaseModule):
    """HARIS hierarchical fusion over shallow / middle / deep visual levels
    (``shared/docs/ris_methods.md`` 5.3 eq. 4 [R])::

        M_1 = HLA_1(F_1, W)
        M_i = HLA_i(F_i + Conv_i(M_{i-1}), W),   i = 2 .. n

    ``F_i`` (B, C_i, h_i, w_i) are the backbone levels, W the CLIP words
    and sentence; ``Conv_i`` = conv (kernel k, stride s, padding k // 2,
    D -> C_i) + norm + activation. Kernel and stride are not given by the
    paper: defaults k = 3, s = 1 (all SAM taps share one grid). With
    s = 2 the levels form a pyramid (64 -> 32 -> 16 at 1024): ``F_i`` is
    resized to the conv output (:func:`~ris_plugins.models.utils.resize_to`).

    Vision-aware words (not stated by the paper [R]), ``word_flow``:

    * ``'mean'`` (default): every level attends the CLIP words W (the
      paper's notation); the head gets the mean of the levels'
      vision-aware words;
    * ``'chain'``: level i + 1 reads level i's vision-aware words instead
      of W; the head gets the last level's.

    Either way every block's parameters reach the loss (no unused
    parameters under DDP) as long as the head reads the words; for a head
    that does not (``QueryMaskHead(decoder_replaced=True)``, HARIS's
    "decoder replaced" ablation) :class:`RefSegmentor` calls
    :meth:`drop_unread_words` at build. The head receives ``(M_n (B, D,
    h_n, w_n), TextFeatures(words (B, T, D), sentence (B, C_s) unchanged,
    pad_mask))``, the interface :class:`CRISHead` and
    :class:`QueryMaskHead` read.

    ``use_hierarchy=False`` (ablation "w/o hierarchy") builds a single HLA
    block on the deepest level only; the other levels are ignored.

    Args:
        in_channels (Sequence[int]): C_i of the levels, shallow to deep
            (SAM ViT-B taps: (768, 768, 768); with the neck as deep:
            (768, 768, 256)).
        text_channels (int): Word width C_w (CLIP: 512).
        sent_channels (int): Sentence width C_s (CLIP ViT-B/16: 512).
        embed_dims (int): D, HLA width (= decoder width).
        hla_cfg (dict, optional): Other :class:`HLABlock` arguments
            (``feedback_at``, ``feedback_mode``, ``use_feedback``,
            ``use_vw``, ``use_lw``, ``replace_with_cross_attn``, ...),
            shared by all levels.
        kernel_size (int): k of the injection conv (odd).
        stride (int): s of the injection conv.
        use_hierarchy (bool): Inject M_{i-1} into level i (see above).
        word_flow (str): 'mean' | 'chain' (see above).
        norm_cfg (dict): Norm of the injection conv.
        act_cfg (dict): Activation of the injection conv.
        init_cfg (dict, optional): Initialisation config.

    Raises:
        ValueError: Empty ``in_channels``, even ``kernel_size``,
            ``stride < 1``, unknown ``word_flow``; at forward, a number
            of levels other than ``len(in_channels)``.
    """

    def __init__(self,
                 in_channels: Sequence[int] = (768, 768, 768),
                 text_channels: int = 512,
                 sent_channels: int = 512,
                 embed_dims: int = 256,
                 hla_cfg: Optional[dict] = None,
                 kernel_size: int = 3,
                 stride: int = 1,
                 use_hierarchy: bool = True,
                 word_flow: str = 'mean',
                 norm_cfg: dict = dict(type='BN'),
                 act_cfg: dict = dict(type='ReLU'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if len(in_channels) == 0:
            raise ValueError('HierarchicalHLA needs at least one level in '
                             'in_channels')
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        if stride < 1:
            raise ValueError(f'stride must be >= 1, got {stride}')
        if word_flow not in WORD_FLOWS:
            raise ValueError(f'unknown word_flow {word_flow!r}; valid: '
                             f'{WORD_FLOWS}')
        self.in_channels = list(in_channels)
        self.embed_dims = embed_dims
        # Checked at build against the text encoder.
        self.text_widths = dict(word=text_channels, sent=sent_channels)
        self.use_hierarchy = use_hierarchy
        self.word_flow = word_flow
        levels = self.in_channels if use_hierarchy else self.in_channels[-1:]
        hla_cfg = hla_cfg or {}
        self.blocks = nn.ModuleList([
            HLABlock(c, text_channels if (i == 0 or word_flow == 'mean')
                     else embed_dims, sent_channels, embed_dims, **hla_cfg)
            for i, c in enumerate(levels)
        ])
        self.inject = nn.ModuleList([
            ConvModule(embed_dims, c, kernel_size, stride=stride,
                       padding=kernel_size // 2, norm_cfg=norm_cfg,
                       act_cfg=act_cfg) for c in levels[1:]
        ])

    @property
    def out_channels(self) -> int:
        """D, width of the fused map and of the words handed on."""
        return self.embed_dims

    def drop_unread_words(self) -> List[int]:
        """For a head that does not read the fused words: remove the VWA
        (:meth:`HLABlock.drop_word_attention`) of every block whose
        vision-aware words nothing reads, i.e. all blocks with
        ``word_flow='mean'`` and the last one with ``'chain'`` (the others
        feed the next level).

        Without it those parameters train but never get a gradient, which
        stops DDP without ``find_unused_parameters`` at the first step.
        ``M_n`` is unchanged; the words handed on become the projected
        words (mean over levels with ``'mean'``). The blocks' ``vw_value``
        / ``vw_out`` / ``w_norm`` keys leave the state dict.

        Returns:
            list[int]: Indices of the blocks whose VWA was removed.

        Raises:
            ValueError: Blocks built with ``use_lw=False`` (see
                :meth:`HLABlock.drop_word_attention`).
        """
        unread = (range(len(self.blocks)) if self.word_flow == 'mean' else
                  [len(self.blocks) - 1])
        dropped = [i for i in unread if self.blocks[i].use_vw]
        for i in dropped:
            self.blocks[i].drop_word_attention()
        return dropped

    def forward(self, visual: Sequence[Tensor], text: TextFeatures
                ) -> Tuple[Tuple[Tensor], TextFeatures]:
        """Fuse.

        Args:
            visual (Sequence[Tensor]): levels (B, C_i, h_i, w_i), shallow
                to deep.
            text (TextFeatures): word_feats (B, T, C_w), sent_feat (B, C_s),
                pad_mask (B, T).

        Returns:
            tuple: ``((M_n (B, D, h, w), ), TextFeatures(words (B, T, D),
            sent_feat, pad_mask))``.
        """
        if len(visual) != len(self.in_channels):
            raise ValueError(
                f'HierarchicalHLA was built for {len(self.in_channels)} '
                f'visual levels (in_channels={self.in_channels}), got '
                f'{len(visual)}')
        levels = list(visual) if self.use_hierarchy else list(visual[-1:])
        fused, words, all_words = None, text.word_feats, []
        for i, (feat, block) in enumerate(zip(levels, self.blocks)):
            if i > 0:
                inj = self.inject[i - 1](fused)  # (B, C_i, h', w')
                feat = resize_to(feat, inj.shape[-2:]) + inj
            if self.word_flow == 'mean':
                words = text.word_feats  # (B, T, C_w)
            fused, words = block(feat, words, text.pad_mask,
                                 text.sent_feat)  # (B, D, h, w), (B, T, D)
            all_words.append(words)
        if self.word_flow == 'mean':
            words = torch.stack(all_words).mean(0)  # (B, T, D)
        return (fused, ), TextFeatures(words, text.sent_feat, text.pad_mask)
