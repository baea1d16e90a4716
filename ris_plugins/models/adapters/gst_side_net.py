"""BarLeRIa's Global Shortcut Tuning (GST) side network."""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import PatchEmbed
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from mmseg.registry import MODELS
from .side_vit_block import AddFusion, FeedbackDecoder, SideViTBlock


@MODELS.register_module()
class GSTSideNet(BaseModule):
    """GST side ViT of BarLeRIa (Wang et al., ICLR 2024), fed by a frozen
    CLIP ViT and steered by the text through a global prior and an AbSViT
    feedback pass.

    Source: ``NastrondAd/BarLeRIa`` ``model/side_adapter/side_adapter.py``
    (``RegionwiseSideAdapterNetwork.forward_features``), ``model/absvit.py``
    (``absvit_tiny_patch16_224``), ``model/segmenter.py`` (``side_linear``);
    ``shared/docs/ris_methods.md`` 4.3. The side net embeds the **RGB image**
    with its own 16x16 patch embedding (the 110,736-parameter
    ``patch_embed`` row of 4.3), so ``forward`` takes the image.

    Algorithm (T = Q + L + N tokens, C = ``width``)::

        x0 = [query_embed + query_pos | MLP(text) | PatchEmbed(img) + pos]
        x0 = fuse_0(x0)                        (side index 0 of fusion_map)
        pass 1:   x = blocks(x0)
        prior:    p = mean_l MLP(text)_l                            (B, C)
                  m = clamp(cos(x_t, p), 0, 1)                       (B, T, 1)
                  x = (x * m) (p p^T) * prior_scale              (rank-1)
        feedback: h = x; for d = depth-1..0: h, td_d = Dec_d(h)
        pass 2:   x = x0; for i = 1..depth: x = block_i(x, td_{i-1});
                  x = fuse_i(x)
        out = Linear(C -> out_dim)(patch tokens of x)     (B, out_dim, h, w)
        aux = sum_d MSE(Dec_d.linear(out_d.detach()), in_d.detach())

    where in_d / out_d are block d's pass-2 input / output. The query
    tokens are carried but their outputs are unused (as upstream). The
    reconstruction is ``Dec_d.linear`` alone (upstream ``Decode_Block``
    returns ``(linear(x), linear2(linear(x)))`` and the loss takes the
    first), so ``aux`` trains only the decoders' first linears.

    Deliberate choices (each a flag; upstream behaviour in brackets):

    * ``batch_axis_prior=False``: p is L2-normalised over its features.
      [True: upstream normalises p over the **batch** axis,
      ``F.normalize(p[None, ..., None], dim=1)``, so a sample's output
      depends on the rest of the batch and at batch 1 every element of
      p/|p| is +-1.]
    * ``include_padding=False``: padding prompt tokens (``pad_mask``) are
      left out of the mean p and masked as attention keys in every side
      block. [True: padding is averaged and attended to.]

    Parameters at the default (official) sizes: patch_embed 110,736,
    pos_embed 97,344, blocks 2,005,632, decoders 331,776, queries 36,864,
    prompt 21,168, 4 fusions 449,088, out_proj 74,240; total 3,126,848.

    Args:
        visual_dim (int): C_v, width of the CLIP visual features (768 for
            ViT-B/16).
        text_dim (int): Width of the text tokens (CLIP ``ln_final`` output,
            512).
        width (int): Side width C. Defaults to 144.
        depth (int): Side blocks. Defaults to 8.
        num_heads (int): Defaults to 3.
        num_queries (int): Q learnable query tokens. Defaults to 128.
        fusion_map (sequence of (int, int)): ``(clip_block, side_index)``
            pairs: CLIP block ``clip_block`` (1-based, a key of
            ``clip_feats``) is added to the patches before side block 1
            (``side_index`` 0) or after side block ``side_index``.
            Defaults to ((1, 0), (4, 1), (7, 2), (10, 3)) (upstream
            ``FUSION_MAP ["0->0","3->1","6->2","9->3"]``, 0-based there).
        grid (int): Side grid of the stored ``pos_embed`` (26 for a 416
            input and patch 16); other grids are resized bicubically.
        out_dim (int): Output channels (CLIP ``word_dim``, 512).
        batch_axis_prior (bool): Reproduce the batch-axis normalisation.
            Defaults to False.
        include_padding (bool): See above. Defaults to False.
        patch_size (int): Defaults to 16.
        in_channels (int): Image channels. Defaults to 3.
        prompt_hidden (int): Hidden width of the text MLP. Defaults to 32.
        mlp_ratio (float): Defaults to 4.
        prior_scale (float): Gain of the rank-1 projection. Defaults to 5.
        drop_path_rate (float): Stochastic depth, linear over depth.
            Defaults to 0 (upstream).
        init_cfg (dict, optional): mmengine init config.

    Raises:
        ValueError: bad ``fusion_map`` (side index outside [0, depth],
            CLIP block < 1, or a side index used twice), ``width`` not
            divisible by ``num_heads``.
    """

    def __init__(self,
                 visual_dim: int = 768,
                 text_dim: int = 512,
                 width: int = 144,
                 depth: int = 8,
                 num_heads: int = 3,
                 num_queries: int = 128,
                 fusion_map: Sequence[Tuple[int, int]] = ((1, 0), (4, 1),
                                                          (7, 2), (10, 3)),
                 grid: int = 26,
                 out_dim: int = 512,
                 batch_axis_prior: bool = False,
                 include_padding: bool = False,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 prompt_hidden: int = 32,
                 mlp_ratio: float = 4.,
                 prior_scale: float = 5.,
                 drop_path_rate: float = 0.,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.side_to_clip = self._check_fusion_map(fusion_map, depth)
        self.visual_dim, self.text_dim = visual_dim, text_dim
        self.width = width
        self.depth, self.num_queries, self.grid = depth, num_queries, grid
        self.out_dim = out_dim
        self.batch_axis_prior = batch_axis_prior
        self.include_padding = include_padding
        self.prior_scale = prior_scale

        self.patch_embed = PatchEmbed(
            in_channels=in_channels,
            embed_dims=width,
            kernel_size=patch_size,
            stride=patch_size,
            padding=0)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, width))
        self.query_embed = nn.Parameter(torch.zeros(1, num_queries, width))
        self.query_pos_embed = nn.Parameter(torch.zeros(1, num_queries, width))
        self.prompt_proj = nn.Sequential(
            nn.Linear(text_dim, prompt_hidden), nn.ReLU(inplace=True),
            nn.Linear(prompt_hidden, width))
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            SideViTBlock(width, num_heads, mlp_ratio, drop_path=dpr[i])
            for i in range(depth))
        self.decoders = nn.ModuleList(
            FeedbackDecoder(width) for _ in range(depth))
        self.fusions = nn.ModuleDict({
            str(side): AddFusion(visual_dim, width)
            for side in self.side_to_clip
        })
        self.out_proj = nn.Linear(width, out_dim)
        self._init_side_vit()

    @staticmethod
    def _check_fusion_map(fusion_map: Sequence[Tuple[int, int]],
                          depth: int) -> Dict[int, int]:
        side_to_clip: Dict[int, int] = {}
        for pair in fusion_map:
            if len(pair) != 2:
                raise ValueError(f'fusion_map entries must be (clip_block, '
                                 f'side_index) pairs, got {pair!r}')
            clip_idx, side_idx = int(pair[0]), int(pair[1])
            if clip_idx < 1:
                raise ValueError(f'fusion_map: CLIP block {clip_idx} is not '
                                 f'valid; CLIP blocks are 1-based')
            if not 0 <= side_idx <= depth:
                raise ValueError(
                    f'fusion_map: side index {side_idx} is not valid for a '
                    f'depth-{depth} side net; valid: 0..{depth}')
            if side_idx in side_to_clip:
                raise ValueError(f'fusion_map: side index {side_idx} is '
                                 f'used twice')
            side_to_clip[side_idx] = clip_idx
        return side_to_clip

    def _init_side_vit(self) -> None:
        """timm ViT init of the side ViT (``init_weights_vit_timm``): its
        Linear layers (blocks, decoders) trunc-normal std 0.02 with zero
        bias; pos/query embeddings as upstream. The text MLP, the
        fusions and ``out_proj`` keep their own inits, as upstream."""
        trunc_normal_(self.pos_embed, std=.02)
        nn.init.normal_(self.query_embed, std=.02)
        nn.init.normal_(self.query_pos_embed, std=.02)
        for m in list(self.blocks.modules()) + list(self.decoders.modules()):
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def clip_blocks(self) -> List[int]:
        """The 1-based CLIP block indices ``forward`` needs."""
        return sorted(set(self.side_to_clip.values()))

    def _clip_map(self, clip_feats: Dict[int, Tensor], clip_idx: int,
                  batch: int) -> Tensor:
        """clip_feats[clip_idx] as (B, visual_dim, H, W)."""
        if clip_idx not in clip_feats:
            raise KeyError(f'GSTSideNet needs the output of CLIP block '
                           f'{clip_idx} (needs {self.clip_blocks}); got keys '
                           f'{sorted(clip_feats)}')
        f = clip_feats[clip_idx]
        if f.dim() == 3:  # (B, H*W, C) patch tokens of a square grid
            side = int(round(int(f.shape[1])**0.5))
            if side * side != f.shape[1]:
                raise ValueError(f'clip_feats[{clip_idx}] has {f.shape[1]} '
                                 f'tokens, not a square grid; pass it as '
                                 f'(B, C, H, W)')
            f = f.transpose(1, 2).reshape(f.shape[0], f.shape[2], side, side)
        if f.dim() != 4 or f.shape[0] != batch:
            raise ValueError(f'clip_feats[{clip_idx}] must be (B, N, C) or '
                             f'(B, C, H, W) with B={batch}, got '
                             f'{tuple(clip_feats[clip_idx].shape)}')
        if f.shape[1] != self.visual_dim:
            raise ValueError(f'clip_feats[{clip_idx}] has width {f.shape[1]} '
                             f'but GSTSideNet visual_dim={self.visual_dim}')
        return f

    def _fuse(self, side_idx: int, x: Tensor, clip_feats: Dict[int, Tensor],
              hw: Tuple[int, int]) -> Tensor:
        """Add the mapped CLIP feature to the patch tokens (the last h*w of
        x (B, T, C)); identity for side indices without a fusion."""
        if side_idx not in self.side_to_clip:
            return x
        n = hw[0] * hw[1]
        clip = self._clip_map(clip_feats, self.side_to_clip[side_idx],
                              x.shape[0])
        patches = self.fusions[str(side_idx)](x[:, -n:], clip, hw)
        return torch.cat([x[:, :-n], patches], dim=1)  # (B, T, C)

    def _prompt_mean(self, prompt: Tensor,
                     pad_mask: Optional[Tensor]) -> Tensor:
        """Mean prompt token (B, L, C) -> (B, C), over valid tokens unless
        ``include_padding``."""
        if self.include_padding or pad_mask is None:
            return prompt.mean(dim=1)
        valid = (~pad_mask).to(prompt.dtype).unsqueeze(-1)  # (B, L, 1)
        return (prompt * valid).sum(1) / valid.sum(1)

    def global_prior(self, x: Tensor, p: Tensor) -> Tensor:
        """Text-steered top-down signal of pass 1.

        Args:
            x (Tensor): (B, T, C) pass-1 output.
            p (Tensor): (B, C) mean prompt.

        Returns:
            Tensor: (B, T, C) = clamp(cos(x, p), 0, 1) * x @ (p p^T) *
            ``prior_scale``; with ``batch_axis_prior`` the "cosine" divides
            p by its norm over the batch axis (upstream defect).
        """
        p_hat = F.normalize(p, dim=0 if self.batch_axis_prior else -1)
        cos = torch.einsum('btc,bc->bt', F.normalize(x, dim=-1), p_hat)
        x = x * cos.clamp(0, 1).unsqueeze(-1)  # (B, T, C)
        proj = torch.einsum('bc,bd->bcd', p, p)  # (B, C, C) rank 1
        return torch.bmm(x, proj) * self.prior_scale  # (B, T, C)

    def feedback(self, x: Tensor) -> List[Tensor]:
        """Run the decoders last -> first; returns td_0..td_{depth-1},
        each (B, T, C)."""
        td: List[Tensor] = [x] * self.depth
        for d in range(self.depth - 1, -1, -1):
            x, td[d] = self.decoders[d](x)
        return td

    def var_loss(self, in_var: List[Tensor], out_var: List[Tensor]) -> Tensor:
        """Sum over blocks of MSE(Dec_d.linear(out_d), in_d), both
        detached (AbSViT's variational reconstruction loss)."""
        losses = [
            F.mse_loss(dec(o.detach())[0], i.detach())
            for dec, i, o in zip(self.decoders, in_var, out_var)
        ]
        return torch.stack(losses).sum()

    def _embed(self, img: Tensor,
               text_feats: Tensor) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """Tokens [queries | prompt | patches] (B, Q+L+N, C), the prompt
        (B, L, C) and the side grid (h, w)."""
        patches, hw = self.patch_embed(img)  # (B, N, C)
        pos = self.pos_embed
        if tuple(hw) != (self.grid, self.grid):
            pos = resize_pos_embed(
                pos, (self.grid, self.grid),
                hw,
                mode='bicubic',
                num_extra_tokens=0)
        b = patches.shape[0]
        queries = (self.query_embed + self.query_pos_embed).expand(b, -1, -1)
        prompt = self.prompt_proj(text_feats)  # (B, L, C)
        x = torch.cat([queries, prompt, patches + pos], dim=1)
        return x, prompt, tuple(hw)

    def _check_inputs(self, img: Tensor, text_feats: Tensor,
                      pad_mask: Optional[Tensor]) -> None:
        if img.dim() != 4:
            raise ValueError(f'img must be (B, C, H, W), got '
                             f'{tuple(img.shape)}')
        if text_feats.dim() != 3 or text_feats.shape[-1] != self.text_dim:
            raise ValueError(f'text_feats must be (B, L, {self.text_dim}) '
                             f'(text_dim), got {tuple(text_feats.shape)}')
        if pad_mask is not None:
            if pad_mask.shape != text_feats.shape[:2]:
                raise ValueError(f'pad_mask must be (B, L) = '
                                 f'{tuple(text_feats.shape[:2])}, got '
                                 f'{tuple(pad_mask.shape)}')
            if not self.include_padding and bool(pad_mask.all(1).any()):
                raise ValueError('pad_mask marks every token of a sentence '
                                 'as padding; the prompt mean is undefined')

    def forward(self,
                img: Tensor,
                clip_feats: Dict[int, Tensor],
                text_feats: Tensor,
                pad_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Args:
            img (Tensor): (B, 3, H, W) the normalised image the CLIP ViT
                sees (H, W multiples of ``patch_size``).
            clip_feats (dict[int, Tensor]): CLIP block outputs keyed by
                1-based block index (at least :attr:`clip_blocks`), each
                patch tokens (B, H'*W', visual_dim) (no CLS, no prompts) or
                (B, visual_dim, H', W').
            text_feats (Tensor): (B, L, text_dim) CLIP text ``ln_final``
                word features.
            pad_mask (Tensor, optional): (B, L) bool, True = padding.

        Returns:
            tuple: out (B, out_dim, h, w) with h = H / patch_size, and the
            scalar auxiliary reconstruction loss.

        Raises:
            KeyError: a needed CLIP block is missing from ``clip_feats``.
            ValueError: shape or width mismatch (names both numbers), or a
                sentence that is all padding.
        """
        self._check_inputs(img, text_feats, pad_mask)
        x0, prompt, hw = self._embed(img, text_feats)
        b, n = x0.shape[0], hw[0] * hw[1]
        key_mask = None
        if pad_mask is not None and not self.include_padding:
            pad = pad_mask.bool()
            key_mask = torch.cat(
                [pad.new_zeros(b, self.num_queries), pad,
                 pad.new_zeros(b, n)], 1)  # (B, T) True = not a key
        x0 = self._fuse(0, x0, clip_feats, hw)

        x = x0
        for blk in self.blocks:  # pass 1
            x = blk(x, key_mask=key_mask)
        td = self.feedback(
            self.global_prior(x, self._prompt_mean(prompt, pad_mask)))

        x, in_var, out_var = x0, [], []
        for i, blk in enumerate(self.blocks, start=1):  # pass 2
            in_var.append(x)
            x = blk(x, td[i - 1], key_mask)
            out_var.append(x)
            x = self._fuse(i, x, clip_feats, hw)

        out = self.out_proj(x[:, -n:])  # (B, N, out_dim)
        out = out.transpose(1, 2).reshape(b, self.out_dim, *hw)
        return out, self.var_loss(in_var, out_var)
