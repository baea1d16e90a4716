"""CRIS's decoder + text-conditioned projector as an mmseg decode head."""
from typing import Optional, Sequence, Tuple

import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor

from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.losses import DiceLoss
from mmseg.models.utils import resize
from mmseg.registry import MODELS
from mmseg.utils import SampleList
from ..text_encoders import TextFeatures
from .vl_transformer_decoder import VLTransformerDecoder

LOSS_AT = ('logits', 'label')


class TextConditionedProjector(nn.Module):
    """CRIS ``Projector`` (``model/layers.py``): upsample the decoded map x4
    and segment it with a 3x3 kernel predicted from the sentence.

    * vision: up2 -> conv3x3(C_in -> C_in) -> up2 -> conv3x3(C_in -> C) ->
      1x1 conv (C -> C, bias); ``up2`` bilinear, ``align_corners=False``,
      conv = conv (no bias) + BN + ReLU;
    * text: ``Linear(C' -> C * k * k + 1)`` gives a per-sample kernel (1, C,
      k, k) and bias, applied as a grouped convolution (groups = B,
      padding k // 2).

    Args:
        in_channels (int): C_in (CRIS: 512).
        channels (int): C (CRIS: C_in / 2 = 256).
        sent_channels (int): C', sentence width (RN50 1024, RN101 512).
        kernel_size (int): k (CRIS: 3), odd.
        norm_cfg (dict): Norm config of the convs.

    Raises:
        ValueError: Even ``kernel_size``.
    """

    def __init__(self,
                 in_channels: int,
                 channels: int,
                 sent_channels: int,
                 kernel_size: int = 3,
                 norm_cfg: dict = dict(type='BN')) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be odd, got {kernel_size}')
        self.channels = channels
        self.kernel_size = kernel_size
        self.vis = nn.Sequential(
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
            ConvModule(in_channels, in_channels, 3, padding=1,
                       norm_cfg=norm_cfg),
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
            ConvModule(in_channels, channels, 3, padding=1,
                       norm_cfg=norm_cfg),
            nn.Conv2d(channels, channels, 1))
        self.txt = nn.Linear(sent_channels,
                             channels * kernel_size**2 + 1)

    def forward(self, x: Tensor, sent: Tensor) -> Tensor:
        """(B, C_in, h, w) map and (B, C') sentence -> (B, 1, 4h, 4w)
        logits."""
        x = self.vis(x)  # (B, C, 4h, 4w)
        b, c, h, w = x.shape
        params = self.txt(sent)  # (B, C*k*k + 1)
        k = self.kernel_size
        weight = params[:, :-1].reshape(b, c, k, k)  # (B, C, k, k)
        out = F.conv2d(
            x.reshape(1, b * c, h, w), weight, bias=params[:, -1],
            padding=k // 2, groups=b)  # (1, B, 4h, 4w)
        return out.transpose(0, 1)  # (B, 1, 4h, 4w)


@MODELS.register_module()
class CRISHead(BaseDecodeHead):
    """CRIS head: vision-language transformer decoder + text-conditioned
    projector, 1-channel logits at stride 4 (104 x 104 at 416).

    Input: ``(fused, text)`` from :class:`CRISFPN` with fused (B, C_in,
    H/16, W/16) and :class:`TextFeatures` (word_feats (B, L, D_t),
    sent_feat (B, C'), pad_mask (B, L)). The decoder attends from pixels to
    words (padding masked), the projector segments with a kernel predicted
    from ``sent_feat``. Source: CRIS ``model/segmenter.py`` +
    ``model/layers.py`` (``TransformerDecoder``, ``Projector``);
    ``shared/docs/ris_methods.md`` 2.4. RN50 sizes: decoder 12.63M,
    projector 5.97M parameters.

    The loss is mmseg's ``loss_decode`` (CRIS: ``CrossEntropyLoss(
    use_sigmoid=True)`` = BCE with logits, mean over pixels). With
    ``loss_at='logits'`` (CRIS) the label is nearest-resized to the logits
    (104 x 104); ``'label'`` is mmseg's default (logits bilinearly
    upsampled to the label size). ``acc_seg`` is the pixel accuracy of
    ``sigmoid > threshold``.

    Args:
        in_channels (int): C_in = decoder width D (CRIS: 512).
        channels (int): Projector width C (CRIS: 256).
        sent_channels (int): C' (RN50 1024, RN101 512).
        text_channels (int, optional): D_t, word width; default C_in.
        num_layers (int): Decoder layers (CRIS: 3).
        num_heads (int): Decoder heads (CRIS: 8).
        ffn_channels (int): Decoder FFN width (CRIS: 2048).
        decoder_dropout (float): Decoder dropout (CRIS: 0.1).
        kernel_size (int): Dynamic kernel size (CRIS: 3).
        loss_at (str): ``'logits'`` or ``'label'`` resolution (above).
        **kwargs: :class:`BaseDecodeHead` arguments; CRIS uses
            ``num_classes=2, out_channels=1, threshold=0.35``. Defaults:
            ``dropout_ratio=0``, BN, ``init_cfg=None`` (mmseg's unused
            ``conv_seg`` is removed).

    Raises:
        ValueError: Unknown ``loss_at`` or ``out_channels != 1``; at
            forward, inputs that are not ``(map, TextFeatures)``.
    """

    def __init__(self,
                 in_channels: int = 512,
                 channels: int = 256,
                 sent_channels: int = 1024,
                 text_channels: Optional[int] = None,
                 num_layers: int = 3,
                 num_heads: int = 8,
                 ffn_channels: int = 2048,
                 decoder_dropout: float = 0.1,
                 kernel_size: int = 3,
                 loss_at: str = 'logits',
                 **kwargs) -> None:
        if loss_at not in LOSS_AT:
            raise ValueError(f'unknown loss_at {loss_at!r}; valid: '
                             f'{LOSS_AT}')
        kwargs.setdefault('num_classes', 2)
        kwargs.setdefault('out_channels', 1)
        kwargs.setdefault('threshold', 0.35)
        kwargs.setdefault('dropout_ratio', 0.0)
        kwargs.setdefault('norm_cfg', dict(type='BN'))
        kwargs.setdefault('init_cfg', None)
        if kwargs['out_channels'] != 1:
            raise ValueError(f'CRISHead predicts 1 channel (sigmoid); got '
                             f"out_channels={kwargs['out_channels']}")
        super().__init__(in_channels, channels, **kwargs)
        self.conv_seg = None  # the projector predicts the logits
        self.loss_at = loss_at
        self.decoder = VLTransformerDecoder(num_layers, in_channels,
                                            num_heads, ffn_channels,
                                            decoder_dropout, text_channels)
        self.projector = TextConditionedProjector(
            in_channels, channels, sent_channels, kernel_size, self.norm_cfg)

    @staticmethod
    def _split(inputs: Sequence) -> Tuple[Tensor, TextFeatures]:
        if (len(inputs) != 2 or not isinstance(inputs[1], TextFeatures)):
            raise ValueError(
                'CRISHead expects (feature map, TextFeatures) as returned by '
                f'CRISFPN, got {type(inputs).__name__} of '
                f'{[type(x).__name__ for x in inputs]}')
        return inputs[0], inputs[1]

    def forward(self, inputs: Tuple[Tensor, TextFeatures]) -> Tensor:
        """``(fused (B, C_in, h, w), text)`` -> logits (B, 1, 4h, 4w)."""
        x, text = self._split(inputs)
        x = self.decoder(x, text.word_feats, text.pad_mask)  # (B, C_in,h,w)
        return self.projector(x, text.sent_feat)  # (B, 1, 4h, 4w)

    def _pixel_accuracy(self, logits: Tensor, label: Tensor) -> Tensor:
        """Percent of non-ignored pixels where ``sigmoid(logits) >
        threshold`` equals the label; logits (B, 1, H, W), label (B, H, W)."""
        pred = (logits.sigmoid() > self.threshold).squeeze(1).long()
        valid = label != self.ignore_index  # (B, H, W)
        correct = (pred == label) & valid
        return 100.0 * correct.sum() / valid.sum().clamp(min=1)

    def loss_by_feat(self, seg_logits: Tensor,
                     batch_data_samples: SampleList) -> dict:
        """Losses of logits (B, 1, h, w) against the samples' gt_sem_seg
        (B, 1, H, W), at the resolution chosen by ``loss_at``."""
        label = self._stack_batch_gt(batch_data_samples)  # (B, 1, H, W)
        if self.loss_at == 'logits':
            label = F.interpolate(
                label.float(), size=seg_logits.shape[2:],
                mode='nearest').long()  # (B, 1, h, w)
        else:
            seg_logits = resize(
                seg_logits, size=label.shape[2:], mode='bilinear',
                align_corners=self.align_corners)  # (B, 1, H, W)
        label = label.squeeze(1)  # (B, h, w)
        losses_decode = (self.loss_decode if isinstance(
            self.loss_decode, nn.ModuleList) else [self.loss_decode])
        loss = dict()
        for loss_decode in losses_decode:
            # mmseg's DiceLoss one-hot encodes a (B, h, w) label into C = 1
            # channel, i.e. the background; give it (B, 1, h, w) instead so
            # it scores the object channel.
            target = (label[:, None]
                      if isinstance(loss_decode, DiceLoss) else label)
            value = loss_decode(seg_logits, target,
                                ignore_index=self.ignore_index)
            loss[loss_decode.loss_name] = loss.get(loss_decode.loss_name,
                                                   0) + value
        loss['acc_seg'] = self._pixel_accuracy(seg_logits.detach(), label)
        return loss
