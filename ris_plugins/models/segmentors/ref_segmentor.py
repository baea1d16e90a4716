"""The generic referring segmentor: image + sentence -> mask."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.structures import PixelData
from torch import Tensor

from mmseg.models.segmentors import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         SampleList, add_prefix)
from ...utils.param_report import log_param_table
from ..text_encoders import TextFeatures

Widths = Union[int, List[int]]


def _widths(value) -> Optional[Widths]:
    """An int width or a list of int widths; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if (isinstance(value, (list, tuple)) and value
            and all(isinstance(v, int) for v in value)):
        return list(value)
    return None


def _selected(out: Widths, index: Union[int, Sequence[int]],
              src: str) -> Widths:
    """The widths of the levels ``index`` picks from a producer's
    ``out`` (an int: every level has that width)."""
    if isinstance(out, int):
        return out if isinstance(index, int) else [out] * len(index)
    picks = [index] if isinstance(index, int) else list(index)
    for i in picks:
        if not -len(out) <= i < len(out):
            raise ValueError(
                f'decode_head in_index {i} is outside the {len(out)} levels '
                f'of {src} (out_channels={out})')
    got = [out[i] for i in picks]
    return got[0] if isinstance(index, int) else got


def check_widths(src_name: str, src: nn.Module, dst_name: str,
                 dst: nn.Module) -> None:
    """Compare the ``out_channels`` a producer (fusion / neck) exposes with
    the ``in_channels`` its consumer (neck / decode head) expects.

    Nothing is checked unless both attributes are an int or a list of
    ints. For an mmseg decode head the levels it reads (``in_index``) are
    compared, summed under ``input_transform='resize_concat'`` (mmseg then
    stores the sum as ``in_channels``). Otherwise an int on one side must
    equal every entry of a list on the other, and two lists must be equal.

    Args:
        src_name (str): Slot name of the producer (for the message).
        src (nn.Module): Producer, e.g. ``HierarchicalHLA`` (out_channels =
            its embed_dims) or ``FeatureAdapter``.
        dst_name (str): Slot name of the consumer.
        dst (nn.Module): Consumer, e.g. ``QueryMaskHead`` (in_channels =
            query width).

    Raises:
        ValueError: The widths differ (names both modules and widths), or
            the head's ``in_index`` is outside the producer's levels.
    """
    out = _widths(getattr(src, 'out_channels', None))
    want = _widths(getattr(dst, 'in_channels', None))
    if out is None or want is None:
        return
    src_desc = f'{src_name} {type(src).__name__}'
    index = getattr(dst, 'in_index', None)
    got = out
    if _widths(index) is not None:
        got = _selected(out, index, src_desc)
        if getattr(dst, 'input_transform', None) == 'resize_concat':
            got = sum(got) if isinstance(got, list) else got
    if isinstance(got, int) and isinstance(want, list):
        ok = all(w == got for w in want)
    elif isinstance(got, list) and isinstance(want, int):
        ok = all(g == want for g in got)
    else:
        ok = got == want
    if not ok:
        raise ValueError(
            f'{src_desc} hands on width(s) {got} (out_channels={out}) but '
            f'{dst_name} {type(dst).__name__} expects in_channels={want}: '
            f'set the {dst_name} in_channels to the {src_name} output width '
            f'(or put a FeatureAdapter between them)')


def text_widths_of(encoder: nn.Module) -> Dict[str, int]:
    """Widths a text encoder hands on: ``word`` (C of ``word_feats``,
    its ``out_channels``) and ``sent`` (C' of ``sent_feat``, its
    ``sent_channels``, else C)."""
    word = _widths(getattr(encoder, 'out_channels', None))
    if not isinstance(word, int):
        return {}
    sent = _widths(getattr(encoder, 'sent_channels', None))
    return dict(word=word, sent=sent if isinstance(sent, int) else word)


def check_text_widths(src_name: str, src: nn.Module, dst_name: str,
                      dst: nn.Module) -> None:
    """Compare the text widths a consumer was built for (its
    ``text_widths``: ``{'word': C, 'sent': C'}``, either key optional) with
    those its text encoder produces (:func:`text_widths_of`).

    Args:
        src_name (str): Slot of the text encoder (for the message).
        src (nn.Module): Text encoder (``out_channels`` / ``sent_channels``).
        dst_name (str): Slot of the consumer, e.g. ``fusion``.
        dst (nn.Module): Consumer, e.g. ``CRISFPN`` (sentence width) or
            ``LanguageGatedFusion`` (word width).

    Raises:
        ValueError: A width differs; the message names both modules, the
            feature and both widths.
    """
    have = text_widths_of(src)
    want = getattr(dst, 'text_widths', None) or {}
    for kind, width in want.items():
        if kind in have and width != have[kind]:
            feat = 'word_feats' if kind == 'word' else 'sent_feat'
            raise ValueError(
                f'{dst_name} {type(dst).__name__} was built for {kind} '
                f'width {width} but {src_name} {type(src).__name__} '
                f'produces {feat} of width {have[kind]}: set the '
                f'{dst_name} text width to {have[kind]}')


@MODELS.register_module()
class RefSegmentor(BaseSegmentor):
    """Referring image segmentation as an mmseg segmentor.

    ``text_encoder(tokens, mask)`` -> :class:`TextFeatures`;
    ``backbone(img)`` -> visual levels (or ``backbone(img, text)`` for a
    backbone with ``takes_text = True``, such as LAVT's Swin with PWAM).
    A backbone with ``encodes_text = True`` (``DualEncoderBackbone``:
    ETRIS / BarLeRIa run both CLIP towers together) replaces the text
    encoder: ``text_encoder`` is then None and ``backbone(img, tokens,
    mask)`` returns ``(visual levels, TextFeatures, aux losses)``; the aux
    losses (e.g. BarLeRIa's side-network loss) join the training losses
    with the prefix ``backbone.``;
    ``fusion(visual, text)`` -> head inputs (optional: without it the
    visual levels go on unchanged); optional ``neck``; ``decode_head`` ->
    logits. Any registered module of mmseg, mmpretrain
    (``type='mmpretrain.X'``) or this plugin fits each slot. A fusion may
    hand the text on to the head by returning it inside the head inputs.

    Text comes pre-tokenized in each data sample's metainfo
    (``text_tokens`` and ``text_mask``, (L,) each, from ``TokenizeText``).
    ``predict`` returns :class:`SegDataSample` with ``seg_logits`` and
    ``pred_sem_seg`` at ``ori_shape``, through mmseg's
    ``postprocess_result`` (letterbox padding in ``img_padding_size`` is
    cropped first; 1-channel heads use sigmoid > ``decode_head.threshold``,
    2-channel heads argmax).

    At build, widths are checked along fusion -> neck -> decode head where
    the modules expose ``out_channels`` / ``in_channels``
    (:func:`check_widths`), and the trainable / frozen parameters per
    top-level module are logged (:func:`log_param_table`) with a one-line
    ``RefSegmentor: ...M parameters, ...M trainable`` summary.

    Args:
        backbone (dict): Visual backbone config.
        text_encoder (dict, optional): Text encoder config; None only with
            a backbone that ``encodes_text``.
        fusion (dict, optional): Fusion config; called as
            ``fusion(visual, text)``.
        decode_head (dict): mmseg decode head config.
        neck (dict, optional): Neck applied to the fused levels.
        train_cfg (dict, optional): Passed to the head.
        test_cfg (dict, optional): ``mode='whole'``; ``output_size``:
            ``'original'`` (default, predictions at ``ori_shape``) or
            ``'input'`` (predictions on the network input grid, LAVT's
            evaluation at 480x480; the test pipeline must then load the
            mask before resizing so the ground truth is on that grid too).
        data_preprocessor (dict, optional): e.g. ``SegDataPreProcessor``.
        init_cfg (dict, optional): Initialisation config.

    Raises:
        ValueError: ``data_samples`` without ``text_tokens`` (every mode
            needs the sentence), token ids outside the text encoder's
            vocabulary (tokenizer and encoder do not match), or
            ``text_encoder`` given with a backbone that encodes text itself
            (or missing without one), or no ``decode_head``; at build,
            a ``fusion`` / ``neck`` whose ``out_channels`` does not match
            the ``in_channels`` of the next module (see
            :func:`check_widths`).
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
                 init_cfg: OptMultiConfig = None) -> None:
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if decode_head is None:
            raise ValueError('RefSegmentor needs a decode_head config')
        self.backbone = MODELS.build(backbone)
        self.backbone_encodes_text = getattr(self.backbone, 'encodes_text',
                                             False)
        if self.backbone_encodes_text == (text_encoder is not None):
            raise ValueError(
                f'{type(self.backbone).__name__} '
                + ('encodes the text itself: set text_encoder=None'
                   if self.backbone_encodes_text else
                   'needs a text_encoder (only a backbone with '
                   'encodes_text=True may go without one)'))
        self.text_encoder = (MODELS.build(text_encoder)
                             if text_encoder is not None else None)
        self.fusion = MODELS.build(fusion) if fusion is not None else None
        if neck is not None:
            self.neck = MODELS.build(neck)
        self.decode_head = MODELS.build(decode_head)
        self._check_widths()
        self.align_corners = self.decode_head.align_corners
        self.num_classes = self.decode_head.num_classes
        self.out_channels = self.decode_head.out_channels
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
        self._log_params()

    def _check_widths(self) -> None:
        """Build-time width checks along fusion -> neck -> decode head (see
        :func:`check_widths`), and of the text widths the backbone (when it
        ``takes_text``) and the fusion read (:func:`check_text_widths`)."""
        chain = [(n, getattr(self, n)) for n in ('fusion', 'neck')
                 if getattr(self, n, None) is not None]
        chain.append(('decode_head', self.decode_head))
        for (a, src), (b, dst) in zip(chain, chain[1:]):
            check_widths(a, src, b, dst)
        encoder = (('backbone.text', getattr(self.backbone, 'text', None))
                   if self.backbone_encodes_text else
                   ('text_encoder', self.text_encoder))
        readers = [('fusion', self.fusion)]
        if getattr(self.backbone, 'takes_text', False):
            readers.insert(0, ('backbone', self.backbone))
        for name, module in readers:
            if module is not None and encoder[1] is not None:
                check_text_widths(*encoder, name, module)

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

    def _stack_tokens(self,
                      data_samples: SampleList) -> Tuple[Tensor, Tensor]:
        """Stack the samples' ``text_tokens`` / ``text_mask`` (each (L,))
        into (B, L) each, checked against the vocabulary."""
        if not data_samples or 'text_tokens' not in data_samples[0]:
            raise ValueError(
                'RefSegmentor needs data_samples whose metainfo holds '
                "'text_tokens' and 'text_mask' (add TokenizeText to the "
                'pipeline and list both in PackSegInputs.meta_keys)')
        device = next(self.parameters()).device
        tokens = torch.stack([
            torch.as_tensor(ds.text_tokens) for ds in data_samples
        ]).to(device)  # (B, L)
        mask = torch.stack([
            torch.as_tensor(ds.text_mask) for ds in data_samples
        ]).to(device)  # (B, L)
        encoder = (self.backbone
                   if self.backbone_encodes_text else self.text_encoder)
        vocab = getattr(encoder, 'vocab_size', None)
        if vocab is not None and int(tokens.max()) >= vocab:
            raise ValueError(
                f'token id {int(tokens.max())} is outside the vocabulary of '
                f'{type(encoder).__name__} ({vocab} ids): the '
                'TokenizeText tokenizer does not match the text encoder '
                "(CLIP BPE: 'clip' with RefCLIPTextEncoder; WordPiece: "
                "'bert' with BertTextEncoder)")
        return tokens, mask

    def encode_text(self, data_samples: SampleList) -> TextFeatures:
        """Stack the samples' ``text_tokens`` / ``text_mask`` (each (L,))
        into (B, L) and run the text encoder.

        Raises:
            ValueError: The backbone encodes the text itself (use
                :meth:`extract_feat`).
        """
        if self.backbone_encodes_text:
            raise ValueError(
                f'{type(self.backbone).__name__} encodes the text together '
                'with the image; there is no separate text encoder')
        return self.text_encoder(*self._stack_tokens(data_samples))

    def _extract(self, inputs: Tensor,
                 data_samples: SampleList) -> Tuple[Tuple, dict]:
        """Head inputs and the backbone's auxiliary losses."""
        aux = {}
        if self.backbone_encodes_text:
            x, text, aux = self.backbone(inputs,
                                         *self._stack_tokens(data_samples))
        else:
            text = self.encode_text(data_samples)
            if getattr(self.backbone, 'takes_text', False):
                x = self.backbone(inputs, text)
            else:
                x = self.backbone(inputs)
        if self.fusion is not None:
            x = self.fusion(x, text)
        if self.with_neck:
            x = self.neck(x)
        return x, aux

    def extract_feat(self, inputs: Tensor,
                     data_samples: SampleList) -> Tuple[Tensor, ...]:
        """Head inputs for images (B, 3, H, W) (see class doc)."""
        return self._extract(inputs, data_samples)[0]

    def encode_decode(self, inputs: Tensor,
                      data_samples: SampleList) -> Tensor:
        """Logits (B, out_channels, H, W) at the input size."""
        logits = self.decode_head(self.extract_feat(inputs, data_samples))
        return resize(
            logits,
            size=inputs.shape[2:],
            mode='bilinear',
            align_corners=self.align_corners)

    def loss(self, inputs: Tensor, data_samples: SampleList) -> dict:
        """Head losses for images (B, 3, H, W) and their gt_sem_seg, plus
        the backbone's auxiliary losses (``backbone.*``)."""
        x, aux = self._extract(inputs, data_samples)
        losses = self.decode_head.loss(x, data_samples, self.train_cfg)
        losses = add_prefix(losses, 'decode')
        losses.update(add_prefix(aux, 'backbone'))
        return losses

    def predict(self, inputs: Tensor,
                data_samples: Optional[SampleList] = None) -> SampleList:
        """Predictions at each sample's ``ori_shape`` (see class doc)."""
        logits = self.encode_decode(inputs, data_samples)
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

    def _forward(self,
                 inputs: Tensor,
                 data_samples: Optional[SampleList] = None) -> Tensor:
        """Raw head output (B, out_channels, h, w) (``mode='tensor'``)."""
        return self.decode_head(self.extract_feat(inputs, data_samples))
