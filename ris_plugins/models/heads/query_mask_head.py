"""HARIS's query-token mask decoder as an mmseg decode head."""
from typing import Any, Dict, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks.transformer import BaseTransformerLayer
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import TextFeatures, sine_pos_1d, sine_pos_2d
from .base_ref_decode_head import BaseRefDecodeHead
# DETR-style post-norm layer: self-attention among the queries, then
# cross-attention to the visual tokens, then the FFN.
OPERATION_ORDER = ('self_attn', 'norm', 'cross_attn', 'norm', 'ffn', 'norm')


def _mlp(dims: Sequence[int]) -> nn.Sequential:
    """Linear layers between consecutive ``dims`` with ReLU in between."""
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


@MODELS.register_module()
class QueryMaskHead(BaseRefDecodeHead):
    """HARIS mask decoder (arXiv 2405.10707; ``shared/docs/ris_methods.md``
    5.3 eq. 5 [R]): a Transformer decoder whose queries are a learnable
    query token followed by the vision-aware word tokens, with the
    language-aware visual tokens as keys / values; the mask is the product
    of the upsampled visual map with the query token's output.

    Inputs: x (B, D, h, w) (level ``in_index`` of what
    :class:`HierarchicalHLA` hands on) and the :class:`TextFeatures` it
    hands on (word_feats (B, T, D), pad_mask (B, T)).

    * queries Q = [q; words] (B, 1 + T, D), positions ``sine_pos_1d(1 + T)``
      (q at 0); K = V = x tokens (B, h*w, D) with ``sine_pos_2d``;
    * ``num_layers`` x mmcv ``BaseTransformerLayer`` (self-attn -> norm ->
      cross-attn -> norm -> FFN -> norm); padded words are masked as keys
      of the self-attention;
    * x -> 2 x [conv3x3 + BN + ReLU + bilinear up x2] -> X (B, C, 4h, 4w);
    * ``logits = MLP(Q^L[0]) . X`` (B, 1, 4h, 4w), MLP D -> D -> ... -> C.

    ``decoder_replaced=True`` (ablation "decoder replaced"): a plain conv
    head, the same two upsampling blocks then a 1x1 conv to one logit; the
    words are not used (``reads_words`` is False, so :class:`RefSegmentor`
    drops the fusion's branch that only computes them).

    Loss: :class:`BaseRefDecodeHead`'s sum over ``loss_decode``; default
    ``BinaryFocalLoss`` (alpha 0.25, gamma 2) x 20 + ``DiceLoss`` x 1,
    SAM's focal:dice ratio [R]; HARIS gives no weights.

    Args:
        in_channels (int): D = fusion width = query width.
        channels (int): C, width of the upsampled map and of the MLP output.
        num_layers (int): Decoder layers L (default 3 [R]).
        num_heads (int): Attention heads.
        ffn_channels (int): FFN hidden width.
        decoder_dropout (float): Attention / FFN dropout.
        num_mlp_layers (int): Linear layers of the query MLP (>= 1).
        decoder_replaced (bool): Plain conv head instead (see above).
        loss_at (str): ``'label'`` (logits bilinearly upsampled to the
            label, mmseg's default) or ``'logits'`` (label nearest-resized).
        use_sdpa (bool): Run the decoder's attentions through
            ``F.scaled_dot_product_attention`` (default False, as PWAM's
            ``use_sdpa``). mmcv's ``MultiheadAttention`` calls its inner
            ``nn.MultiheadAttention`` with ``need_weights=True``, which
            torch computes with explicit bmm / softmax and averaged
            weights that mmcv drops; the switch makes those calls
            ``need_weights=False``, torch's SDPA path. Same parameters
            and outputs to float rounding. The quantization adapter of
            ``nn.MultiheadAttention`` computes through ``matmul1`` /
            ``matmul2`` whatever ``need_weights`` is, so a quantized
            head is unaffected.
        **kwargs: :class:`BaseRefDecodeHead` arguments; default
            ``threshold=0.5``.

    Raises:
        ValueError: ``num_layers < 1``, ``num_mlp_layers < 1``,
            ``in_channels`` not a multiple of 4 (2-D sine positions) or of
            ``num_heads``, unknown ``loss_at``, ``out_channels != 1``; at
            forward, a map or words whose widths are not D (the fusion
            width must equal the query width).
    """

    def __init__(self,
                 in_channels: int = 256,
                 channels: int = 64,
                 num_layers: int = 3,
                 num_heads: int = 8,
                 ffn_channels: int = 1024,
                 decoder_dropout: float = 0.1,
                 num_mlp_layers: int = 3,
                 decoder_replaced: bool = False,
                 loss_at: str = 'label',
                 use_sdpa: bool = False,
                 **kwargs) -> None:
        if num_layers < 1 or num_mlp_layers < 1:
            raise ValueError(f'num_layers and num_mlp_layers must be >= 1, '
                             f'got {num_layers} and {num_mlp_layers}')
        if in_channels % 4 or in_channels % num_heads:
            raise ValueError(
                f'in_channels={in_channels} must be a multiple of 4 (2-D '
                f'sine positions) and of num_heads={num_heads}')
        kwargs.setdefault('threshold', 0.5)
        kwargs.setdefault('loss_decode', [
            dict(type='BinaryFocalLoss', loss_weight=20.0),
            dict(type='DiceLoss', use_sigmoid=True, loss_weight=1.0)
        ])
        super().__init__(in_channels, channels, loss_at=loss_at, **kwargs)
        self.decoder_replaced = decoder_replaced
        self.reads_words = not decoder_replaced
        self.use_sdpa = use_sdpa
        self.upsample = nn.Sequential(
            ConvModule(in_channels, channels, 3, padding=1,
                       norm_cfg=self.norm_cfg, act_cfg=self.act_cfg),
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False),
            ConvModule(channels, channels, 3, padding=1,
                       norm_cfg=self.norm_cfg, act_cfg=self.act_cfg),
            nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False))
        if decoder_replaced:
            self.mask_conv = nn.Conv2d(channels, 1, 1)
            return
        self.query = nn.Parameter(torch.zeros(1, 1, in_channels))  # q
        nn.init.normal_(self.query, std=0.02)
        attn = dict(type='MultiheadAttention', embed_dims=in_channels,
                    num_heads=num_heads, attn_drop=decoder_dropout,
                    proj_drop=decoder_dropout, batch_first=True)
        self.layers = nn.ModuleList(
            BaseTransformerLayer(
                attn_cfgs=[attn, attn],
                ffn_cfgs=dict(embed_dims=in_channels,
                              feedforward_channels=ffn_channels,
                              ffn_drop=decoder_dropout),
                operation_order=OPERATION_ORDER,
                batch_first=True) for _ in range(num_layers))
        self.mask_mlp = _mlp([in_channels] * num_mlp_layers + [channels])
        for layer in self.layers:
            for attention in layer.attentions:  # mmcv MultiheadAttention
                attention.attn.register_forward_pre_hook(
                    self._attention_kwargs, with_kwargs=True)

    def _attention_kwargs(self, module: nn.Module, args: Tuple,
                          kwargs: Dict[str, Any]) -> Tuple[Tuple, Dict]:
        """Forward pre-hook of the decoder's ``nn.MultiheadAttention``:
        ``need_weights=False`` (torch's SDPA path) when ``use_sdpa``."""
        if self.use_sdpa:
            kwargs['need_weights'] = False
        return args, kwargs

    def _check(self, x: Tensor, text: TextFeatures) -> None:
        widths = (x.shape[1], text.word_feats.shape[-1])
        if widths != (self.in_channels, ) * 2:
            raise ValueError(
                f'QueryMaskHead was built with query width in_channels='
                f'{self.in_channels}; got visual width {widths[0]} and word '
                f'width {widths[1]} (set the fusion embed_dims to the head '
                f'in_channels)')

    def decode_query(self, x: Tensor, text: TextFeatures) -> Tensor:
        """Run the decoder: x (B, D, h, w) -> query token output (B, D)."""
        b, d, h, w = x.shape
        mem = x.flatten(2).transpose(1, 2)  # (B, N, D)
        mem_pos = sine_pos_2d(h, w, d, x.device)[None]  # (1, N, D)
        words = text.word_feats  # (B, T, D)
        q = torch.cat([self.query.expand(b, -1, -1), words], 1)  # (B,1+T,D)
        q_pos = sine_pos_1d(q.shape[1], d, x.device)[None]  # (1, 1+T, D)
        q_mask = torch.cat([text.pad_mask.new_zeros(b, 1), text.pad_mask],
                           1)  # (B, 1 + T), True = pad
        for layer in self.layers:
            q = layer(q, mem, mem, query_pos=q_pos, key_pos=mem_pos,
                      query_key_padding_mask=q_mask)  # (B, 1 + T, D)
        return q[:, 0]  # (B, D)

    def forward(self, inputs: Sequence[Tensor], text: TextFeatures) -> Tensor:
        """x (B, D, h, w) (``inputs[in_index]``) and text (words (B, T, D))
        -> logits (B, 1, 4h, 4w)."""
        x = self._transform_inputs(inputs)  # (B, D, h, w)
        self._check(x, text)
        up = self.upsample(x)  # (B, C, 4h, 4w)
        if self.decoder_replaced:
            return self.mask_conv(up)  # (B, 1, 4h, 4w)
        emb = self.mask_mlp(self.decode_query(x, text))  # (B, C)
        return torch.einsum('bc,bchw->bhw', emb, up)[:, None]  # (B,1,4h,4w)
