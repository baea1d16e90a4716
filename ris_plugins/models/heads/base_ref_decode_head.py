"""The base of decode heads that read the text and predict one channel."""
from abc import abstractmethod
from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import DiceLoss
from mmseg.models.utils import resize
from mmseg.utils import ConfigType, SampleList
from ..utils import TextFeatures

LOSS_AT = ('logits', 'label')


class BaseRefDecodeHead(BaseDecodeHead):
    """mmseg's :class:`BaseDecodeHead` for referring segmentation: the head
    reads the text, predicts one object channel (sigmoid) and owns the
    binary loss shared by CRIS, ETRIS, BarLeRIa and HARIS.

    ``forward(inputs, text)`` (subclasses) maps the levels handed on by the
    fusion / neck and the :class:`TextFeatures` to logits (B, 1, h, w);
    ``loss`` / ``predict`` take the text as their last argument.
    :class:`RefSegmentor` passes it to every head whose ``text_input`` is
    ``'features'``, as this class sets. ``reads_words`` (True here) says
    whether the head reads ``TextFeatures.word_feats``; a head that does
    not sets it False and the segmentor drops the fusion's word-only
    branch (see :meth:`RefSegmentor._drop_unread_fusion_words`).

    Loss (:meth:`loss_by_feat`): every ``loss_decode`` entry is summed per
    ``loss_name``; mmseg's ``DiceLoss`` receives the label as (B, 1, H, W)
    so that it scores the object channel (with (B, H, W) it one-hot encodes
    into one channel, i.e. the background), the others (B, H, W). With
    ``loss_at='logits'`` (CRIS) the label is nearest-resized to the logits;
    ``'label'`` is mmseg's default (logits bilinearly upsampled to the
    label). ``acc_seg`` is the pixel accuracy (percent) of ``sigmoid >
    threshold``. Sources: CRIS ``model/segmenter.py`` (BCE on logits at
    stride 4), HARIS (focal + Dice, arXiv 2405.10707).

    Args:
        in_channels (int | Sequence[int]): As :class:`BaseDecodeHead`.
        channels (int): As :class:`BaseDecodeHead`.
        loss_at (str): ``'logits'`` or ``'label'`` (above).
        **kwargs: :class:`BaseDecodeHead` arguments. Defaults:
            ``num_classes=2, out_channels=1``, ``dropout_ratio=0``,
            ``norm_cfg=dict(type='BN')``, ``init_cfg=None``; subclasses set
            ``threshold``. mmseg's ``conv_seg`` is removed (the subclass
            predicts the logits).

    Raises:
        ValueError: Unknown ``loss_at`` (lists the valid ones) or
            ``out_channels != 1``.
    """

    text_input = 'features'
    reads_words = True

    def __init__(self, in_channels, channels: int, loss_at: str = 'logits',
                 **kwargs) -> None:
        if loss_at not in LOSS_AT:
            raise ValueError(f'unknown loss_at {loss_at!r}; valid: '
                             f'{LOSS_AT}')
        kwargs.setdefault('num_classes', 2)
        kwargs.setdefault('out_channels', 1)
        kwargs.setdefault('dropout_ratio', 0.0)
        kwargs.setdefault('norm_cfg', dict(type='BN'))
        kwargs.setdefault('init_cfg', None)
        if kwargs['out_channels'] != 1:
            raise ValueError(
                f'{type(self).__name__} predicts 1 channel (sigmoid); got '
                f"out_channels={kwargs['out_channels']}")
        super().__init__(in_channels, channels, **kwargs)
        self.conv_seg = None
        self.loss_at = loss_at

    @abstractmethod
    def forward(self, inputs: Sequence[Tensor], text: TextFeatures) -> Tensor:
        """Levels and text -> logits (B, 1, h, w)."""

    def loss(self, inputs: Sequence[Tensor], batch_data_samples: SampleList,
             train_cfg: ConfigType, text: TextFeatures) -> dict:
        """Losses of the logits for ``inputs`` and ``text`` against the
        samples' gt_sem_seg (see class doc)."""
        return self.loss_by_feat(self.forward(inputs, text),
                                 batch_data_samples)

    def predict(self, inputs: Sequence[Tensor], batch_img_metas: List[dict],
                test_cfg: ConfigType, text: TextFeatures) -> Tensor:
        """Logits resized to the input shape (mmseg's
        ``predict_by_feat``)."""
        return self.predict_by_feat(self.forward(inputs, text),
                                    batch_img_metas)

    def loss_by_feat(self, seg_logits: Tensor,
                     batch_data_samples: SampleList) -> dict:
        """Summed ``loss_decode`` terms of logits (B, 1, h, w) against the
        samples' gt_sem_seg (B, 1, H, W), at the resolution chosen by
        ``loss_at``, plus ``acc_seg``."""
        label = self._stack_batch_gt(batch_data_samples)  # (B, 1, H, W)
        if self.loss_at == 'logits':
            label = F.interpolate(label.float(), size=seg_logits.shape[2:],
                                  mode='nearest').long()  # (B, 1, h, w)
        else:
            seg_logits = resize(seg_logits, size=label.shape[2:],
                                mode='bilinear',
                                align_corners=self.align_corners)
        label = label.squeeze(1)  # (B, h, w)
        losses = (self.loss_decode if isinstance(
            self.loss_decode, nn.ModuleList) else [self.loss_decode])
        loss = dict()
        for loss_fn in losses:
            target = (label[:, None]
                      if isinstance(loss_fn, DiceLoss) else label)
            value = loss_fn(seg_logits, target,
                            ignore_index=self.ignore_index)
            loss[loss_fn.loss_name] = loss.get(loss_fn.loss_name, 0) + value
        loss['acc_seg'] = self.pixel_accuracy(seg_logits.detach(), label)
        return loss

    def pixel_accuracy(self, logits: Tensor, label: Tensor) -> Tensor:
        """Percent of non-ignored pixels where ``sigmoid(logits) >
        threshold`` equals the label; logits (B, 1, H, W), label (B, H,
        W)."""
        with torch.no_grad():
            pred = (logits.sigmoid() > self.threshold).squeeze(1).long()
            valid = label != self.ignore_index  # (B, H, W)
            correct = (pred == label) & valid
            return 100.0 * correct.sum() / valid.sum().clamp(min=1)
