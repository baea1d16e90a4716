"""What the two towers of :class:`DualEncoderBackbone` carry between blocks
(:class:`DualEncoderState`, read and edited by the adapters) and what the
runner returns (:class:`DualEncoderOutput`)."""
from dataclasses import dataclass, field
from typing import Dict, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ...utils import TextFeatures


def tokens_to_map(x: Tensor, grid: Tuple[int, int]) -> Tensor:
    """Patch tokens (B, h * w, C) -> map (B, C, h, w), row-major as
    mmpretrain's ``PatchEmbed`` flattens them.

    Raises:
        RuntimeError: ``h * w`` differs from the number of tokens.
    """
    b, _, c = x.shape
    return x.transpose(1, 2).reshape(b, c, *grid)  # (B, C, h, w)


@dataclass
class DualEncoderState:
    """Everything the two towers carry between blocks; adapters read and
    write it in place.

    Attributes:
        vis (Tensor): ViT (``layout='tokens'``): (B, N_v, C_v) visual
            sequence ``[CLS, prompts (vis_prefix - 1), patches (h * w)]``;
            ResNet (``layout='map'``): the (B, C_v, h, w) map of the last
            stage run.
        txt (Tensor): (B, L', C_t) text sequence ``[prepended (txt_prefix),
            the L embedded tokens]``.
        grid (tuple[int, int]): (h, w) patch grid (ResNet: of the current
            map).
        tokens (Tensor): (B, L) CLIP-BPE ids of the sentence.
        pad_mask (Tensor): (B, L') bool, True at padding (ids == 0) of the
            text sequence; prepended tokens are never padding.
        vis_prefix (int): Tokens before the patches (1 = the CLS token).
        txt_prefix (int): Tokens prepended to the text.
        vis_key_mask (Tensor, optional): (B, N_v) bool, True at visual
            tokens other tokens must not attend to (padded prompts).
        vis_done (int): Visual blocks run so far (0 = embeddings only).
        txt_done (int): Text blocks run so far.
        patch_taps (dict[int, Tensor]): 1-based visual block -> (B, h * w,
            C_v) patch tokens after that block (and after the adapters
            hooked there); ResNet: the (B, C_v, h, w) map.
        layout (str): 'tokens' (ViT) or 'map' (ResNet).
    """
    vis: Tensor
    txt: Tensor
    grid: Tuple[int, int]
    tokens: Tensor
    pad_mask: Tensor
    vis_prefix: int = 1
    txt_prefix: int = 0
    vis_key_mask: Optional[Tensor] = None
    vis_done: int = 0
    txt_done: int = 0
    patch_taps: Dict[int, Tensor] = field(default_factory=dict)
    layout: str = 'tokens'

    @property
    def eot_index(self) -> Tensor:
        """(B,) position of CLIP's EOT token (the largest id) in ``txt``."""
        return self.tokens.argmax(dim=-1) + self.txt_prefix

    def patches(self) -> Tensor:
        """Patch tokens as a map (B, C_v, h, w) (CLS and prompts dropped);
        ResNet: the current map itself."""
        if self.layout == 'map':
            return self.vis
        return tokens_to_map(self.vis[:, self.vis_prefix:], self.grid)

    def set_patches(self, x: Tensor) -> None:
        """Replace the patch tokens by the map x (B, C_v, h, w)."""
        if self.layout == 'map':
            self.vis = x
            self.grid = tuple(x.shape[-2:])
            return
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, C_v)
        self.vis = torch.cat([self.vis[:, :self.vis_prefix], x], dim=1)

    def prepend_visual(self,
                       prompts: Tensor,
                       key_mask: Optional[Tensor] = None) -> None:
        """Insert prompt tokens (B, P, C_v) right after the CLS token.

        Args:
            prompts (Tensor): (B, P, C_v).
            key_mask (Tensor, optional): (B, P) bool, True where the prompt
                must be hidden from attention (e.g. it comes from padding).

        Raises:
            ValueError: The visual tower is a ResNet (no token sequence).
        """
        if self.layout == 'map':
            raise ValueError('prepend_visual needs a token sequence (CLIPViT '
                             'visual tower); a CLIPResNet tower has none')
        b, p, _ = prompts.shape
        self.vis = torch.cat([self.vis[:, :1], prompts, self.vis[:, 1:]],
                             dim=1)
        if key_mask is not None or self.vis_key_mask is not None:
            old = self.vis_key_mask
            if old is None:
                old = self.vis.new_zeros(
                    b, self.vis.shape[1] - p, dtype=torch.bool)
            if key_mask is None:
                key_mask = old.new_zeros(b, p)
            self.vis_key_mask = torch.cat([old[:, :1], key_mask, old[:, 1:]],
                                          dim=1)  # (B, N_v)
        self.vis_prefix += p

    def prepend_text(self, tokens: Tensor) -> None:
        """Prepend tokens (B, P, C_t) to the text; they are real tokens
        (not padding), and the EOT index moves by P."""
        p = tokens.shape[1]
        self.txt = torch.cat([tokens, self.txt], dim=1)  # (B, P + L', C_t)
        self.pad_mask = torch.cat(
            [self.pad_mask.new_zeros(tokens.shape[0], p), self.pad_mask],
            dim=1)
        self.txt_prefix += p


class DualEncoderOutput(NamedTuple):
    """What :class:`DualEncoderBackbone` returns.

    Attributes:
        visual (tuple[Tensor]): Visual levels for the neck: the
            ``visual_taps`` maps (B, C_v, h, w), the projected final map
            (B, D, h, w) and, with a side network, its output (B, D_s, h,
            w) last.
        text (TextFeatures): word_feats (B, L', C_t) (``ln_final``),
            sent_feat (B, D_t) (EOT token @ ``text_projection``), pad_mask
            (B, L').
        losses (dict[str, Tensor]): Auxiliary losses (side network).
    """
    visual: Tuple[Tensor, ...]
    text: TextFeatures
    losses: Dict[str, Tensor]
