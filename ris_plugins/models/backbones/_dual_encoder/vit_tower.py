"""Stepping a :class:`CLIPViT` (mmpretrain ``VisionTransformer``) visual
tower one block at a time for :class:`DualEncoderBackbone`, with optional
key padding mask and shortcut transforms; the library layers are called,
never copied (ETRIS ``model/bridger.py`` ``Bridger_ViT``, BarLeRIa
``model/intertwiner.py`` drive OpenAI's ViT the same way)."""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from ...utils.checkpoint import maybe_checkpoint
from ..clip_vit import CLIPViT
from .state import DualEncoderState, tokens_to_map

Shortcuts = Optional[Tuple[Optional[nn.Module], Optional[nn.Module]]]


def vit_attention(attn: nn.Module,
                  x: Tensor,
                  key_mask: Optional[Tensor] = None) -> Tensor:
    """mmpretrain ``MultiheadAttention.forward`` with an optional key
    padding mask (the library module has none).

    Args:
        attn (nn.Module): mmpretrain ``MultiheadAttention`` (its ``qkv``,
            ``proj``, ``proj_drop``, ``gamma1``, ``out_drop`` are used).
        x (Tensor): (B, N, C).
        key_mask (Tensor, optional): (B, N) bool, True = not attended to.
            None gives exactly ``attn(x)``.

    Returns:
        Tensor: (B, N, C).
    """
    if key_mask is None:
        return attn(x)
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads,
                              attn.head_dims).permute(2, 0, 3, 1, 4)
    allowed = ~key_mask[:, None, None, :]  # (B, 1, 1, N)
    out = F.scaled_dot_product_attention(
        qkv[0],
        qkv[1],
        qkv[2],
        attn_mask=allowed,
        dropout_p=attn.attn_drop if attn.training else 0.)  # (B, h, N, d)
    out = attn.proj(out.transpose(1, 2).reshape(b, n, attn.embed_dims))
    return attn.out_drop(attn.gamma1(attn.proj_drop(out)))  # (B, N, C)


def vit_block(layer: nn.Module,
              x: Tensor,
              key_mask: Optional[Tensor] = None,
              shortcuts: Shortcuts = None) -> Tensor:
    """mmpretrain ``TransformerEncoderLayer`` with optional key mask and
    shortcut transforms (SNF): ``x = s1(x) + Attn(LN1 x)``, ``x = s2(x) +
    FFN(LN2 x)``. With neither it is exactly ``layer(x)``. (B, N, C) in
    and out."""
    if key_mask is None and shortcuts is None:
        return layer(x)
    s1, s2 = shortcuts if shortcuts is not None else (None, None)
    a = vit_attention(layer.attn, layer.ln1(x), key_mask)  # (B, N, C)
    x = (s1(x) if s1 is not None else x) + a
    res = s2(x) if s2 is not None else x
    return layer.ffn(layer.ln2(x), identity=res)  # (B, N, C)


class ViTTower:
    """Driver of a :class:`CLIPViT` tower: block 0 is the embedding (patch
    embedding + CLS + resized positions + ``ln_pre``), blocks 1..N its
    ``layers``; the state holds the token sequence ``[CLS, prompts,
    patches]`` (B, N_v, C_v) (see the package doc for the interface)."""

    layout = 'tokens'
    vis_prefix = 1  # the CLS token

    @staticmethod
    def widths(vit: CLIPViT) -> Tuple[int, ...]:
        """C_v after the embedding and after each of the N blocks."""
        return (vit.embed_dims, ) * (len(vit.layers) + 1)

    @staticmethod
    def embed(vit: CLIPViT, img: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        """(B, 3, H, W) -> ((B, 1 + h * w, C_v) ``[CLS, patches]``, (h,
        w)), as ``VisionTransformer.forward`` before its layers."""
        x, grid = vit.patch_embed(img)  # (B, h*w, C_v)
        cls = vit.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, C_v)
        x = torch.cat([cls, x], dim=1)
        x = x + resize_pos_embed(
            vit.pos_embed,
            vit.patch_resolution,
            grid,
            mode=vit.interpolate_mode,
            num_extra_tokens=vit.num_extra_tokens)
        x = vit.pre_norm(vit.drop_after_pos(x))  # (B, 1 + h*w, C_v)
        return x, tuple(grid)

    @staticmethod
    def run_block(vit: CLIPViT, state: DualEncoderState, i: int,
                  shortcuts: Shortcuts) -> None:
        """Run layer ``i`` (0-based) on ``state.vis`` with the state's key
        mask (prompts from padding) and the given shortcuts, checkpointed
        when the tower's ``with_cp`` is set."""
        layer = vit.layers[i]
        params = list(layer.parameters())
        if shortcuts is not None:
            params += [p for s in shortcuts if s is not None
                       for p in s.parameters()]
        state.vis = maybe_checkpoint(
            vit_block, layer, state.vis, state.vis_key_mask, shortcuts,
            enabled=vit.with_cp, params=params)  # (B, N_v, C_v)

    @staticmethod
    def tap(state: DualEncoderState) -> Tensor:
        """Patch tokens (B, h * w, C_v) (CLS and prompts dropped)."""
        return state.vis[:, state.vis_prefix:]

    @staticmethod
    def levels(vit: CLIPViT, state: DualEncoderState,
               taps: Sequence[int]) -> List[Tensor]:
        """The ``taps`` patch maps (B, C_v, h, w) and the final map
        ``ln_post(patches) [@ proj]`` (B, D, h, w) (D = C_v without
        ``output_dim``), as :meth:`CLIPViT.forward`."""
        levels = [
            tokens_to_map(state.patch_taps[v], state.grid) for v in taps
        ]  # (B, C_v, h, w) each
        final = vit.ln1(ViTTower.tap(state))  # (B, h*w, C_v)
        if vit.output_dim is not None:
            final = final @ vit.proj  # (B, h*w, D)
        levels.append(tokens_to_map(final, state.grid))
        return levels
