"""The generic referring segmentor: image + sentence -> mask."""
from typing import Dict, Optional, Tuple

import torch.nn as nn
from mmengine.logging import print_log
from mmengine.structures import PixelData
from torch import Tensor

from mmseg.models.segmentors import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         OptSampleList, SampleList, add_prefix)
from ...utils.param_report import log_param_table
from ..data_preprocessors import RefDataPreProcessor
from ..utils import (TextFeatureCache, TextFeatures, check_text_widths,
                     check_widths)

#: How a backbone reads the sentence (its ``text_input`` attribute):
#: ``None`` -> ``backbone(img)``; ``'features'`` -> ``backbone(img, text)``
#: with the text encoder's :class:`TextFeatures` (LAVT's Swin with PWAM);
#: ``'tokens'`` -> ``backbone(img, tokens, text_mask)`` returning
#: ``(levels, TextFeatures, aux losses)`` (ETRIS / BarLeRIa run both CLIP
#: towers together, so the backbone is also the text encoder).
BACKBONE_TEXT_INPUTS = (None, 'features', 'tokens')

Feats = Tuple[Tensor, ...]


def reads_text(module: Optional[nn.Module]) -> bool:
    """Whether a neck or decode head takes the text: its ``text_input`` is
    ``'features'`` (e.g. :class:`FeatureAdapter`, every
    :class:`BaseRefDecodeHead`); mmseg's own necks and heads do not."""
    return getattr(module, 'text_input', None) == 'features'


@MODELS.register_module()
class RefSegmentor(BaseSegmentor):
    """Referring image segmentation as an mmseg segmentor.

    Text is an explicit input next to the image. :class:`RefDataPreProcessor`
    stacks the samples' tokens into ``tokens`` / ``text_mask`` (B, L), and
    every mode runs::

        text  = text_encoder(tokens, text_mask)          # TextFeatures
        feats = backbone(img)  |  backbone(img, text)     # by text_input
        (or feats, text, aux = backbone(img, tokens, text_mask))
        feats, text = fusion(feats, text)                 # optional
        feats, text = neck(feats, text)  |  neck(feats)   # optional
        logits = decode_head(feats, text)  |  decode_head(feats)

    (see :data:`BACKBONE_TEXT_INPUTS` and :func:`reads_text`). A fusion may
    change the text it hands on (HARIS's HLA returns new words). Any
    registered module of mmseg, mmpretrain (``type='mmpretrain.X'``) or this
    plugin fits each slot. The backbone's auxiliary losses (BarLeRIa's side
    network) join the training losses with the prefix ``backbone.``.

    ``forward(img, tokens, text_mask)`` (``mode='tensor'``, the default) is
    a plain-tensor forward: (B, 3, H, W) float, (B, L) int64, (B, L) int64
    -> raw head logits (B, out_channels, h, w), the signature export and
    benchmarks use. ``mode='predict'`` returns :class:`SegDataSample` with
    ``seg_logits`` and ``pred_sem_seg`` at ``ori_shape`` through mmseg's
    ``postprocess_result`` (letterbox padding in ``img_padding_size`` is
    cropped first; 1-channel heads use sigmoid > ``decode_head.threshold``,
    2-channel heads argmax); ``mode='loss'`` returns the losses.

    At build, widths are checked along fusion -> neck -> decode head
    (:func:`check_widths`) and the text widths the backbone and fusion read
    against the text encoder (:func:`check_text_widths`); the trainable /
    frozen parameters per top-level module are logged
    (:func:`log_param_table`) with a one-line summary.

    Args:
        backbone (dict): Visual backbone config.
        text_encoder (dict, optional): Text encoder config; None only with
            a backbone whose ``text_input`` is ``'tokens'``.
        decode_head (dict): mmseg decode head config.
        fusion (dict, optional): Fusion config: ``fusion(feats, text) ->
            (feats, text)``.
        neck (dict, optional): Neck applied to the fused levels.
        train_cfg (dict, optional): Passed to the head.
        test_cfg (dict, optional): ``output_size``: ``'original'``
            (default, predictions at ``ori_shape``) or ``'input'``
            (predictions on the network input grid, LAVT's evaluation at
            480x480; the test pipeline must then load the mask before
            resizing so the ground truth is on that grid too).
        data_preprocessor (dict, optional): A :class:`RefDataPreProcessor`
            config (default: one with no normalisation).
        pretrained (str, optional): Backbone checkpoint, as mmseg's
            ``EncoderDecoder``: sets the backbone's ``init_cfg`` (mmseg's
            ``init_model`` passes None).
        text_cache_size (int): While training, remember the outputs of a
            frozen text encoder for up to this many sentences
            (:class:`TextFeatureCache`), so a sentence is encoded once per
            stretch of training, not once per step. 0 (default): off.
        init_cfg (dict, optional): Initialisation config.

    Raises:
        ValueError: At build: no ``decode_head``; a ``text_encoder`` given
            with a backbone that encodes text itself (or missing without
            one); a backbone ``text_input`` outside
            :data:`BACKBONE_TEXT_INPUTS`; a data preprocessor other than
            :class:`RefDataPreProcessor`; mismatched widths;
            ``text_cache_size`` > 0 with a text encoder that has trainable
            parameters or without a separate text encoder. At forward:
            no ``tokens`` / ``text_mask``.
    """

    def __init__(self,
                 backbone: ConfigType,
                 text_encoder: OptConfigType = None,
                 decode_head: OptConfigType = None,
                 fusion: OptConfigType = None,
                 neck: OptConfigType = None,
                 train_cfg: OptConfigType = None,
                 test_cfg: OptConfigType = None,
                 data_preprocessor: OptConfigType = None,
                 pretrained: Optional[str] = None,
                 text_cache_size: int = 0,
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor
            or dict(type='RefDataPreProcessor'),
            init_cfg=init_cfg)
        if not isinstance(self.data_preprocessor, RefDataPreProcessor):
            raise ValueError(
                'RefSegmentor needs data_preprocessor=dict(type='
                "'RefDataPreProcessor', ...) (it stacks the text next to "
                f'the images); got {type(self.data_preprocessor).__name__}')
        if decode_head is None:
            raise ValueError('RefSegmentor needs a decode_head config')
        if pretrained is not None:
            backbone = dict(backbone, init_cfg=dict(type='Pretrained',
                                                    checkpoint=pretrained))
        self.backbone = MODELS.build(backbone)
        self.text_input = self._backbone_text_input(text_encoder)
        self.text_encoder = (MODELS.build(text_encoder)
                             if text_encoder is not None else None)
        self.fusion = MODELS.build(fusion) if fusion is not None else None
        if neck is not None:
            self.neck = MODELS.build(neck)
        self.decode_head = MODELS.build(decode_head)
        self._drop_unread_fusion_words()
        self._check_widths()
        self.align_corners = self.decode_head.align_corners
        self.num_classes = self.decode_head.num_classes
        self.out_channels = self.decode_head.out_channels
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self.text_cache = self._build_text_cache(text_cache_size)
        self._register_load_state_dict_pre_hook(self._clear_text_cache)
        self._log_params()

    # ---------------------------------------------------------------- build
    def _backbone_text_input(self, text_encoder: OptConfigType):
        """The backbone's ``text_input``, checked against ``text_encoder``."""
        name = type(self.backbone).__name__
        text_input = getattr(self.backbone, 'text_input', None)
        if text_input not in BACKBONE_TEXT_INPUTS:
            raise ValueError(f'{name}.text_input={text_input!r}; valid: '
                             f'{BACKBONE_TEXT_INPUTS}')
        if (text_input == 'tokens') == (text_encoder is not None):
            raise ValueError(
                f'{name} ' + ('encodes the text itself: set text_encoder='
                              'None' if text_input == 'tokens' else
                              "needs a text_encoder (only a backbone with "
                              "text_input='tokens' may go without one)"))
        return text_input

    def _build_text_cache(self, size: int) -> Optional[TextFeatureCache]:
        """The cache of a frozen text encoder's outputs, or None."""
        if not size:
            return None
        if self.text_encoder is None:
            raise ValueError(
                f'text_cache_size={size}: {type(self.backbone).__name__} '
                'encodes the text itself; only a separate frozen '
                'text_encoder can be cached')
        trainable = [n for n, p in self.text_encoder.named_parameters()
                     if p.requires_grad]
        if trainable:
            raise ValueError(
                f'text_cache_size={size} needs a frozen text_encoder, but '
                f'{len(trainable)} of its parameters train (first: '
                f'{trainable[0]!r}); set frozen=True or text_cache_size=0')
        return TextFeatureCache(size)

    def _clear_text_cache(self, *args) -> None:
        if getattr(self, 'text_cache', None) is not None:
            self.text_cache.clear()

    def train(self, mode: bool = True) -> 'RefSegmentor':
        """``nn.Module.train``; a change of mode also empties the text
        cache, so cached features never outlive a stretch of training
        (mmengine's ``IterBasedTrainLoop`` calls ``train()`` before every
        iteration, which keeps the cache)."""
        if mode != self.training:
            self._clear_text_cache()
        return super().train(mode)

    @property
    def text_source(self) -> Tuple[str, nn.Module]:
        """(slot name, module) of what encodes the sentence: the text
        encoder, or the backbone's text tower."""
        if self.text_input == 'tokens':
            return 'backbone.text', getattr(self.backbone, 'text',
                                            self.backbone)
        return 'text_encoder', self.text_encoder

    def _drop_unread_fusion_words(self) -> None:
        """When nothing after the fusion reads its words (the neck reads no
        text, and the head reads none or has ``reads_words`` False, e.g.
        ``QueryMaskHead(decoder_replaced=True)``), let the fusion remove
        the branch that only computes them (``drop_unread_words``, e.g.
        :meth:`HierarchicalHLA.drop_unread_words`), so that every
        trainable parameter gets a gradient (DDP without
        ``find_unused_parameters``). Outputs are unchanged."""
        drop = getattr(self.fusion, 'drop_unread_words', None)
        head_reads = (reads_text(self.decode_head)
                      and getattr(self.decode_head, 'reads_words', True))
        if drop is None or head_reads or reads_text(getattr(
                self, 'neck', None)):
            return
        dropped = drop()
        if dropped:
            print_log(
                f'RefSegmentor: {type(self.decode_head).__name__} does not '
                f'read the fused words; removed the word-only branch of '
                f'fusion blocks {dropped}', logger='current')

    def _check_widths(self) -> None:
        """Build-time width checks along fusion -> neck -> decode head (see
        :func:`check_widths`), and of the text widths the backbone (when it
        reads text features) and the fusion read
        (:func:`check_text_widths`)."""
        chain = [(n, getattr(self, n)) for n in ('fusion', 'neck')
                 if getattr(self, n, None) is not None]
        chain.append(('decode_head', self.decode_head))
        for (a, src), (b, dst) in zip(chain, chain[1:]):
            check_widths(a, src, b, dst)
        readers = [('fusion', self.fusion)]
        if self.text_input == 'features':
            readers.insert(0, ('backbone', self.backbone))
        for name, module in readers:
            if module is not None:
                check_text_widths(*self.text_source, name, module)

    def _log_params(self) -> None:
        """Log the trainable / frozen table per top-level module and the
        one-line summary."""
        log_param_table(self)
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters()
                        if p.requires_grad)
        print_log(
            f'RefSegmentor: {total / 1e6:.2f}M parameters, '
            f'{trainable / 1e6:.2f}M trainable', logger='current')

    # -------------------------------------------------------------- forward
    def forward(self,
                inputs: Tensor,
                tokens: Optional[Tensor] = None,
                text_mask: Optional[Tensor] = None,
                data_samples: OptSampleList = None,
                mode: str = 'tensor'):
        """Run one mode (see class doc).

        Args:
            inputs (Tensor): Images (B, 3, H, W), normalised.
            tokens (Tensor): (B, L) int64 token ids.
            text_mask (Tensor): (B, L) int64, 1 on real tokens.
            data_samples (list[SegDataSample], optional): Needed by
                ``'loss'`` (``gt_sem_seg``) and ``'predict'`` (shapes).
            mode (str): ``'tensor'``, ``'predict'`` or ``'loss'``.

        Raises:
            ValueError: ``tokens`` or ``text_mask`` is missing, or an
                unknown ``mode``.
        """
        if tokens is None or text_mask is None:
            raise ValueError(
                'RefSegmentor needs the text: tokens and text_mask (B, L) '
                "(RefDataPreProcessor stacks the samples' text_tokens / "
                'text_mask, which TokenizeText adds)')
        if mode == 'loss':
            return self.loss(inputs, tokens, text_mask, data_samples)
        if mode == 'predict':
            return self.predict(inputs, tokens, text_mask, data_samples)
        if mode == 'tensor':
            return self._forward(inputs, tokens, text_mask)
        raise ValueError(f"unknown mode {mode!r}; valid: 'tensor', "
                         "'predict', 'loss'")

    def encode_text(self, tokens: Tensor, text_mask: Tensor) -> TextFeatures:
        """Run the text encoder on (B, L) tokens and mask (through the text
        cache while training, when ``text_cache_size`` > 0).

        Raises:
            ValueError: The backbone encodes the text itself (use
                :meth:`extract_feat`).
        """
        if self.text_input == 'tokens':
            raise ValueError(
                f'{type(self.backbone).__name__} encodes the text together '
                'with the image; there is no separate text encoder')
        if self.text_cache is not None and self.training:
            return self.text_cache(self.text_encoder, tokens, text_mask)
        return self.text_encoder(tokens, text_mask)

    def _extract(self, inputs: Tensor, tokens: Tensor,
                 text_mask: Tensor) -> Tuple[Feats, TextFeatures, dict]:
        """Head inputs, the text the head reads, and the backbone's
        auxiliary losses."""
        aux: Dict[str, Tensor] = {}
        if self.text_input == 'tokens':
            feats, text, aux = self.backbone(inputs, tokens, text_mask)
        else:
            text = self.encode_text(tokens, text_mask)
            feats = (self.backbone(inputs, text)
                     if self.text_input == 'features' else
                     self.backbone(inputs))
        if self.fusion is not None:
            feats, text = self.fusion(feats, text)
        if self.with_neck:
            if reads_text(self.neck):
                feats, text = self.neck(feats, text)
            else:
                feats = self.neck(feats)
        return feats, text, aux

    def extract_feat(self, inputs: Tensor, tokens: Tensor,
                     text_mask: Tensor) -> Tuple[Feats, TextFeatures]:
        """Head inputs (levels) and the text for images (B, 3, H, W) and
        tokens / mask (B, L)."""
        return self._extract(inputs, tokens, text_mask)[:2]

    def _decode(self, feats: Feats, text: TextFeatures) -> Tensor:
        """Raw head logits (B, out_channels, h, w)."""
        if reads_text(self.decode_head):
            return self.decode_head(feats, text)
        return self.decode_head(feats)

    def _forward(self, inputs: Tensor, tokens: Tensor,
                 text_mask: Tensor) -> Tensor:
        """Raw head logits (B, out_channels, h, w) (``mode='tensor'``)."""
        return self._decode(*self.extract_feat(inputs, tokens, text_mask))

    def encode_decode(self, inputs: Tensor, tokens: Tensor,
                      text_mask: Tensor) -> Tensor:
        """Logits (B, out_channels, H, W) at the input size."""
        return resize(
            self._forward(inputs, tokens, text_mask),
            size=inputs.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)

    def loss(self, inputs: Tensor, tokens: Tensor, text_mask: Tensor,
             data_samples: SampleList) -> dict:
        """Head losses (``decode.*``) against the samples' gt_sem_seg, plus
        the backbone's auxiliary losses (``backbone.*``)."""
        feats, text, aux = self._extract(inputs, tokens, text_mask)
        if reads_text(self.decode_head):
            losses = self.decode_head.loss(feats, data_samples,
                                           self.train_cfg, text)
        else:
            losses = self.decode_head.loss(feats, data_samples,
                                           self.train_cfg)
        losses = add_prefix(losses, 'decode')
        losses.update(add_prefix(aux, 'backbone'))
        return losses

    def predict(self, inputs: Tensor, tokens: Tensor, text_mask: Tensor,
                data_samples: SampleList) -> SampleList:
        """Predictions at each sample's ``ori_shape`` (see class doc)."""
        logits = self.encode_decode(inputs, tokens, text_mask)
        return self.postprocess_result(logits, data_samples)

    def postprocess_result(self, seg_logits: Tensor,
                           data_samples: SampleList) -> SampleList:
        """Set ``seg_logits`` / ``pred_sem_seg`` per sample, at
        ``ori_shape`` (mmseg's postprocessing) or, with
        ``test_cfg.output_size='input'``, at ``img_shape``.

        Args:
            seg_logits (Tensor): (B, C, H, W) at the (padded) input size.
            data_samples (list[SegDataSample]): With ``img_shape``.

        Raises:
            ValueError: Unknown ``output_size``.
        """
        output_size = (self.test_cfg or {}).get('output_size', 'original')
        if output_size == 'original':
            return super().postprocess_result(seg_logits, data_samples)
        if output_size != 'input':
            raise ValueError(f"test_cfg.output_size must be 'original' or "
                             f"'input', got {output_size!r}")
        for logits, ds in zip(seg_logits, data_samples):
            h, w = ds.img_shape
            logits = logits[:, :h, :w]  # (C, h, w), batch padding removed
            if logits.shape[0] > 1:
                pred = logits.argmax(dim=0, keepdim=True)  # (1, h, w)
            else:
                logits = logits.sigmoid()
                pred = (logits > self.decode_head.threshold).to(logits)
            ds.set_data(dict(seg_logits=PixelData(data=logits),
                             pred_sem_seg=PixelData(data=pred)))
        return data_samples
