"""SAM's image encoder (mmpretrain ``ViTSAM``), frozen, returning the
patch-token maps of chosen blocks (HARIS)."""
from typing import Optional, Sequence, Tuple, Union

import torch
from mmpretrain.models.backbones import ViTSAM
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import FrozenEvalMixin
from ..utils.checkpoint import maybe_checkpoint


@MODELS.register_module()
class SAMViT(FrozenEvalMixin, ViTSAM):
    """mmpretrain ``ViTSAM`` (SAM's image encoder) that returns the token
    maps after chosen blocks, optionally with SAM's 256-d neck as the
    deepest level, frozen by default.

    Source: ``facebookresearch/segment-anything``
    ``segment_anything/modeling/image_encoder.py`` (``ImageEncoderViT``)
    and ``build_sam.py`` (ViT-B/L/H: global-attention blocks 2,5,8,11 /
    5,11,17,23 / 7,15,23,31, 14 x 14 windows elsewhere, neck 256);
    HARIS taps ``shared/docs/ris_methods.md`` 5.2 [R]. The transformer is
    mmpretrain's; this class only chooses what to return.

    For input (B, 3, H, W) and patch 16 the grid is (h, w) = (H/16, W/16)
    (64 x 64 at 1024). Output i is the token map after block
    ``out_indices[i]``, (B, C, h, w) with C = ``embed_dims`` (ViT-B: 768),
    in block order. With ``neck_as_deep=True`` the last output is instead
    SAM's neck (``channel_reduction``: conv1x1 + LN2d + conv3x3 + LN2d)
    applied to the last block, (B, N_c, h, w), N_c = ``out_channels``
    (256): exactly SAM's ``image_encoder`` output.

    Input sizes other than ``img_size``: mmpretrain resizes the absolute
    positional table (1, 64, 64, C) bicubically to the grid on every
    forward, and the relative-position tables of the global-attention
    blocks are linearly resized on every forward (``get_rel_pos``); window
    blocks keep 14 x 14 windows (the grid is zero-padded to a multiple of
    14). When a checkpoint of another size is loaded, both tables are
    resized once to ``img_size`` (``_prepare_pos_embed``,
    ``_prepare_relative_position``). So set ``img_size`` to the training
    input size (e.g. 480 -> 30 x 30) and load the 1024 checkpoint.

    Parameter names are mmpretrain's;
    ``tools/model_converters/sam_to_ris.py`` maps SAM's ``image_encoder.*``
    keys onto them.

    Args:
        arch (str | dict): 'base' | 'large' | 'huge' (or 'b' / 'l' / 'h'),
            or a dict with ``embed_dims``, ``num_layers``, ``num_heads``,
            ``feedforward_channels`` and ``global_attn_indexes``.
        img_size (int): Input size the positional tables are built for
            (SAM: 1024).
        out_indices (Sequence[int], optional): 0-based blocks to tap
            (negative counts from the end). None: the arch's
            global-attention blocks (ViT-B: 2, 5, 8, 11).
        neck_as_deep (bool): Replace the last output by SAM's neck output.
            SAM applies the neck after the final block, so the last tap must
            then be the final block.
        out_channels (int): Neck width N_c (SAM: 256). The neck is always
            built so that SAM checkpoints load without missing keys.
        frozen (bool): No gradients and always eval mode (HARIS).
        with_cp (bool): Activation checkpointing of every block when the
            encoder trains (``frozen=False``); a frozen encoder keeps no
            activations, so it is a no-op there.
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained',
            checkpoint=<converted>, prefix='backbone.')``.
        **kwargs: Other ``ViTSAM`` arguments (``window_size``,
            ``use_rel_pos``, ``patch_size``, ...). SAM's settings are
            ``ViTSAM``'s defaults (LN eps 1e-6, GELU, qkv bias, relative
            positions, window 14).

    Raises:
        ValueError: A tap outside ``[-num_layers, num_layers)``, an empty or
            repeated tap list, ``neck_as_deep`` without the final block as
            last tap, ``out_channels <= 0`` with ``neck_as_deep``, or an
            ``out_type`` other than 'featmap' / 'raw'.
        KeyError: A dict ``arch`` without ``global_attn_indexes`` (mmpretrain
            needs it).
    """

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: int = 1024,
                 out_indices: Optional[Sequence[int]] = None,
                 neck_as_deep: bool = False,
                 out_channels: int = 256,
                 frozen: bool = True,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        if kwargs.get('out_type', 'featmap') not in ('featmap', 'raw'):
            raise ValueError(f"SAMViT returns feature maps; out_type must be "
                             f"'featmap', got {kwargs['out_type']!r}")
        kwargs['out_type'] = 'featmap'
        super().__init__(
            arch=arch,
            img_size=img_size,
            out_channels=out_channels,
            out_indices=-1,  # replaced below after validation
            init_cfg=init_cfg,
            **kwargs)
        if out_indices is None:
            out_indices = self.global_attn_indexes
        self.out_indices = self._check_indices(out_indices)
        if neck_as_deep:
            if self.out_indices[-1] != self.num_layers - 1:
                raise ValueError(
                    f'neck_as_deep applies SAM\'s neck after the final block '
                    f'({self.num_layers - 1}), which must be the last of '
                    f'out_indices; got {list(out_indices)}')
            if out_channels <= 0:
                raise ValueError('neck_as_deep needs the neck: out_channels '
                                 f'must be > 0, got {out_channels}')
        self.neck_as_deep = neck_as_deep
        self.feat_channels = tuple(
            out_channels if (neck_as_deep and k == len(self.out_indices) - 1)
            else self.embed_dims for k in range(len(self.out_indices)))
        self.with_cp = with_cp
        self.frozen = frozen
        if frozen:
            self.requires_grad_(False)
            self.eval()

    def _check_indices(self, out_indices: Sequence[int]) -> list:
        """Validate and normalise taps to sorted 0-based block indices."""
        n = self.num_layers
        indices = list(out_indices)
        if not indices:
            raise ValueError('out_indices must name at least one block')
        bad = [i for i in indices if not -n <= i < n]
        if bad:
            raise ValueError(
                f'out_indices {bad} are outside the encoder depth: blocks '
                f'are 0..{n - 1} (or -{n}..-1) for this {n}-block SAM ViT')
        indices = [i % n for i in indices]
        if len(set(indices)) != len(indices) or indices != sorted(indices):
            raise ValueError(f'out_indices must be increasing and distinct, '
                             f'got {list(out_indices)}')
        return indices

    def frozen_modules(self):
        """The whole encoder when ``frozen`` (it then stays in eval
        mode)."""
        return (self, ) if self.frozen else ()

    def init_weights(self) -> None:
        """mmpretrain's init (or the ``Pretrained`` checkpoint); the frozen
        state is kept."""
        super().init_weights()
        if self.frozen:
            self.requires_grad_(False)

    def _embed(self, x: Tensor) -> Tensor:
        """Patch embedding + absolute positions resized to the grid:
        (B, 3, H, W) -> (B, h, w, C) (as ``ViTSAM.forward``)."""
        b = x.shape[0]
        x, grid = self.patch_embed(x)  # (B, h*w, C)
        x = x.view(b, *grid, self.embed_dims)  # (B, h, w, C)
        if self.use_abs_pos:
            pos = resize_pos_embed(
                self.pos_embed.flatten(1, 2), self.patch_resolution, grid,
                mode=self.interpolate_mode, num_extra_tokens=0)  # (1, hw, C)
            x = self.drop_after_pos(x + pos.view(1, *grid, self.embed_dims))
        return x

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one map per tap, (B, C, h, w) each (the last
        (B, N_c, h, w) with ``neck_as_deep``)."""
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and not self.frozen):
            x = self._embed(x)  # (B, h, w, C)
            outs = []
            for i, layer in enumerate(self.layers[:self.out_indices[-1] + 1]):
                x = maybe_checkpoint(layer, x, enabled=self.with_cp,
                                     params=layer.parameters())  # (B,h,w,C)
                if i in self.out_indices:
                    outs.append(x.permute(0, 3, 1, 2))  # (B, C, h, w)
            if self.neck_as_deep:
                outs[-1] = self.channel_reduction(outs[-1])  # (B, N_c, h, w)
        return tuple(outs)
