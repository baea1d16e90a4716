"""CRIS's decoder + text-conditioned projector as an mmseg decode head."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import TextFeatures
from .base_ref_decode_head import BaseRefDecodeHead
from .vl_transformer_decoder import VLTransformerDecoder


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
        if torch.onnx.is_in_onnx_export():
            return self._export_forward(x, weight, params[:, -1], k)
        out = F.conv2d(
            x.reshape(1, b * c, h, w), weight, bias=params[:, -1],
            padding=k // 2, groups=b)  # (1, B, 4h, 4w)
        return out.transpose(0, 1)  # (B, 1, 4h, 4w)

    @staticmethod
    def _export_forward(x: Tensor, weight: Tensor, bias: Tensor,
                        k: int) -> Tensor:
        """The per-sample convolution as a sum of k*k shifted products.

        ONNX ``Conv`` takes ``group`` as a static attribute, so the grouped
        convolution above (groups = B) would freeze the batch size into an
        exported graph; this form has no batch-dependent attribute and
        equals it up to float32 summation order (tested in
        ``tests/test_deploy``). Shapes: x (B, C, H, W), weight (B, C, k, k),
        bias (B,), k = kernel size -> (B, 1, H, W).
        """
        h, w = x.shape[-2:]
        xp = F.pad(x, [k // 2] * 4)
        out = bias[:, None, None]  # (B, 1, 1)
        for i in range(k):
            for j in range(k):
                tap = xp[:, :, i:i + h, j:j + w]  # (B, C, H, W)
                out = out + (tap * weight[:, :, i, j, None, None]).sum(1)
        return out[:, None]  # (B, 1, H, W)


@MODELS.register_module()
class CRISHead(BaseRefDecodeHead):
    """CRIS head: vision-language transformer decoder + text-conditioned
    projector, 1-channel logits at stride 4 (104 x 104 at 416).

    Inputs: the fused map (B, C_in, H/16, W/16) (level ``in_index`` of what
    :class:`CRISFPN` hands on) and the :class:`TextFeatures` (word_feats
    (B, L, D_t), sent_feat (B, C'), pad_mask (B, L)). The decoder attends
    from pixels to words (padding masked), the projector segments with a
    kernel predicted from ``sent_feat``. Source: CRIS
    ``model/segmenter.py`` + ``model/layers.py`` (``TransformerDecoder``,
    ``Projector``);
    ``shared/docs/ris_methods.md`` 2.4. RN50 sizes: decoder 12.63M,
    projector 5.97M parameters.

    The loss is :class:`BaseRefDecodeHead`'s over ``loss_decode`` (CRIS:
    ``CrossEntropyLoss(use_sigmoid=True)`` = BCE with logits, mean over
    pixels, at the logits' 104 x 104: ``loss_at='logits'``).

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
        use_sdpa (bool): Decoder attention through
            ``F.scaled_dot_product_attention`` (default True, see
            :class:`VLTransformerDecoder`).
        with_cp (bool): Activation checkpointing of every decoder layer
            (default False, see :class:`VLTransformerDecoder`).
        **kwargs: :class:`BaseRefDecodeHead` arguments; default
            ``threshold=0.35`` (CRIS).

    Raises:
        ValueError: Unknown ``loss_at`` or ``out_channels != 1``.
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
                 use_sdpa: bool = True,
                 with_cp: bool = False,
                 **kwargs) -> None:
        kwargs.setdefault('threshold', 0.35)
        super().__init__(in_channels, channels, loss_at=loss_at, **kwargs)
        self.decoder = VLTransformerDecoder(num_layers, in_channels,
                                            num_heads, ffn_channels,
                                            decoder_dropout, text_channels,
                                            use_sdpa, with_cp)
        self.projector = TextConditionedProjector(
            in_channels, channels, sent_channels, kernel_size, self.norm_cfg)

    def forward(self, inputs: Sequence[Tensor], text: TextFeatures) -> Tensor:
        """Fused map (B, C_in, h, w) (``inputs[in_index]``) and text ->
        logits (B, 1, 4h, 4w)."""
        x = self._transform_inputs(inputs)  # (B, C_in, h, w)
        x = self.decoder(x, text.word_feats, text.pad_mask)  # (B, C_in,h,w)
        return self.projector(x, text.sent_feat)  # (B, 1, 4h, 4w)
