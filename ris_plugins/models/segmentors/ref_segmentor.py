"""The generic referring segmentor: image + sentence -> mask."""
from typing import Optional, Tuple

import torch
from mmengine.logging import print_log
from mmengine.structures import PixelData
from torch import Tensor

from mmseg.models.segmentors import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import (ConfigType, OptConfigType, OptMultiConfig,
                         SampleList, add_prefix)
from ..text_encoders import TextFeatures


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
            (or missing without one), or no ``decode_head``.
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
        self.align_corners = self.decode_head.align_corners
        self.num_classes = self.decode_head.num_classes
        self.out_channels = self.decode_head.out_channels
        self.train_cfg = train_cfg
        self.test_cfg = test_cfg
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
