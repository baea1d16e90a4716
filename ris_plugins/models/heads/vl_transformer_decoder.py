"""CRIS's vision-language transformer decoder (``model/layers.py``
``TransformerDecoder`` / ``TransformerDecoderLayer``), shared by the CLIP
family (CRIS, ETRIS, BarLeRIa)."""
from typing import Optional

import torch.nn as nn
from torch import Tensor

from ..utils import sine_pos_1d, sine_pos_2d
from ..utils.checkpoint import maybe_checkpoint


class VLTransformerDecoderLayer(nn.Module):
    """One CRIS decoder layer on visual tokens v (N, B, D) and words w
    (L, B, D_t) (sequence-first), with positional encodings p_v, p_w::

        v += Drop(LN(SelfAttn(q=k=LN1(v) + p_v, value=LN1(v))))
        v += Drop(LN(CrossAttn(q=LN2(v) + p_v, k=w + p_w, value=w,
                               key_padding_mask)))
        v += Drop(FFN(LN3(v)))

    with FFN = Linear(D, F) -> ReLU -> Drop -> LayerNorm(F) -> Linear(F, D).
    Attention is ``nn.MultiheadAttention`` with attention dropout.
    Source: CRIS ``model/layers.py`` ``TransformerDecoderLayer``.

    Args:
        dim (int): D, visual token width (CRIS: 512).
        num_heads (int): Attention heads (CRIS: 8).
        ffn_dim (int): F, FFN hidden width (CRIS: 2048).
        dropout (float): Dropout probability (CRIS: 0.1).
        text_dim (int, optional): D_t, word width; default D.
        use_sdpa (bool): See :class:`VLTransformerDecoder`.
    """

    def __init__(self,
                 dim: int = 512,
                 num_heads: int = 8,
                 ffn_dim: int = 2048,
                 dropout: float = 0.1,
                 text_dim: Optional[int] = None,
                 use_sdpa: bool = True) -> None:
        super().__init__()
        text_dim = text_dim or dim
        self.use_sdpa = use_sdpa
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, num_heads,
                                               dropout=dropout)
        self.self_attn_norm = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(
            dim, num_heads, dropout=dropout, kdim=text_dim, vdim=text_dim)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(), nn.Dropout(dropout),
            nn.LayerNorm(ffn_dim), nn.Linear(ffn_dim, dim))
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(self, vis: Tensor, words: Tensor, vis_pos: Tensor,
                word_pos: Tensor, pad_mask: Optional[Tensor]) -> Tensor:
        """Update the visual tokens.

        Args:
            vis (Tensor): (N, B, D) visual tokens.
            words (Tensor): (L, B, D_t) word features.
            vis_pos (Tensor): (N, 1, D) visual positional encoding.
            word_pos (Tensor): (L, 1, D_t) word positional encoding.
            pad_mask (Tensor, optional): (B, L) bool, True at padding.

        Returns:
            Tensor: (N, B, D).
        """
        x = self.norm1(vis)  # (N, B, D)
        qk = x + vis_pos
        # need_weights=False: torch's F.scaled_dot_product_attention path;
        # True: explicit bmm / softmax (the returned weights are dropped).
        x = self.self_attn(qk, qk, value=x,
                           need_weights=not self.use_sdpa)[0]
        vis = vis + self.dropout1(self.self_attn_norm(x))  # (N, B, D)
        x = self.norm2(vis)
        x = self.cross_attn(
            query=x + vis_pos,
            key=words + word_pos,
            value=words,
            key_padding_mask=pad_mask,
            need_weights=not self.use_sdpa)[0]  # (N, B, D)
        vis = vis + self.dropout2(self.cross_attn_norm(x))
        return vis + self.dropout3(self.ffn(self.norm3(vis)))  # (N, B, D)


class VLTransformerDecoder(nn.Module):
    """CRIS's vision-language decoder: ``num_layers`` x
    :class:`VLTransformerDecoderLayer` then a final LayerNorm(D); the sine
    positional encodings (2-D for pixels, 1-D for words) are recomputed for
    each input size.

    Source: CRIS ``model/layers.py`` ``TransformerDecoder``
    (``return_intermediate=False``); ``shared/docs/ris_methods.md`` 2.4.
    RN50 configuration (3 layers, D 512, 8 heads, F 2048): 12,631,552
    parameters.

    Args:
        num_layers (int): Number of layers (CRIS: 3).
        dim (int): D (CRIS: 512).
        num_heads (int): Heads (CRIS: 8).
        ffn_dim (int): F (CRIS: 2048).
        dropout (float): Dropout (CRIS: 0.1).
        text_dim (int, optional): D_t, word width; default D.
        use_sdpa (bool): Call the ``nn.MultiheadAttention`` layers with
            ``need_weights=False``, which torch computes with
            ``F.scaled_dot_product_attention`` (default True: this
            decoder has always done so; it is the one module whose
            default is the fused path). False: ``need_weights=True``,
            torch's explicit bmm / softmax path, for comparison (see
            ``configs/cris/README.md``). Same parameters and outputs to
            float rounding. The quantization adapter of
            ``nn.MultiheadAttention`` computes through ``matmul1`` /
            ``matmul2`` whatever ``need_weights`` is, so PTQ is
            unaffected.
        with_cp (bool): Activation checkpointing of each layer (its
            attention probabilities, dropout masks and FFN activations
            are recomputed in backward instead of kept: about 0.2 GB per
            layer for CRIS RN50 at 416², batch 2). Same outputs and
            gradients (dropout masks are replayed); no BatchNorm inside.
            Off without autograd. Default False.

    Raises:
        ValueError: ``num_layers < 1``; at forward, inputs whose widths do
            not match ``dim`` / ``text_dim``.
    """

    def __init__(self,
                 num_layers: int = 3,
                 dim: int = 512,
                 num_heads: int = 8,
                 ffn_dim: int = 2048,
                 dropout: float = 0.1,
                 text_dim: Optional[int] = None,
                 use_sdpa: bool = True,
                 with_cp: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f'num_layers must be >= 1, got {num_layers}')
        self.dim = dim
        self.with_cp = with_cp
        self.text_dim = text_dim or dim
        self.layers = nn.ModuleList(
            VLTransformerDecoderLayer(dim, num_heads, ffn_dim, dropout,
                                      self.text_dim, use_sdpa)
            for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def _check(self, vis: Tensor, words: Tensor) -> None:
        if vis.shape[1] != self.dim or words.shape[-1] != self.text_dim:
            raise ValueError(
                f'VLTransformerDecoder expects visual width {self.dim} and '
                f'word width {self.text_dim}, got {vis.shape[1]} and '
                f'{words.shape[-1]}')

    def forward(self, vis: Tensor, words: Tensor,
                pad_mask: Optional[Tensor] = None) -> Tensor:
        """Decode.

        Args:
            vis (Tensor): (B, D, H, W) visual map.
            words (Tensor): (B, L, D_t) word features.
            pad_mask (Tensor, optional): (B, L) bool, True at padding
                (``key_padding_mask`` of the cross-attention).

        Returns:
            Tensor: (B, D, H, W).
        """
        self._check(vis, words)
        b, d, h, w = vis.shape
        vis_pos = sine_pos_2d(h, w, d, vis.device).to(vis.dtype)[:, None]
        word_pos = sine_pos_1d(words.shape[1], self.text_dim,
                               words.device).to(words.dtype)[:, None]
        x = vis.flatten(2).permute(2, 0, 1)  # (H*W, B, D)
        txt = words.transpose(0, 1)  # (L, B, D_t)
        for layer in self.layers:
            x = maybe_checkpoint(layer, x, txt, vis_pos, word_pos,
                                 pad_mask, enabled=self.with_cp,
                                 params=layer.parameters())  # (H*W, B, D)
        x = self.norm(x)  # (H*W, B, D)
        return x.permute(1, 2, 0).reshape(b, d, h, w)  # (B, D, H, W)
