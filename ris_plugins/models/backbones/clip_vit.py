"""CLIP's ViT visual tower as mmpretrain's ``VisionTransformer`` with CLIP
settings, returning patch-token maps at chosen layers (ETRIS, BarLeRIa)."""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import FrozenEvalMixin
from ..utils.checkpoint import maybe_checkpoint

# OpenAI CLIP ViT (``clip/model.py`` ``VisionTransformer``) expressed in
# mmpretrain's arguments, as in mmpretrain ``configs/clip/*.py`` and
# ``models/multimodal/ram/openset_utils.py``: pre-norm (``ln_pre``) and
# patch conv without bias (``pre_norm=True`` implies ``bias=False``),
# QuickGELU MLPs, final norm = ``ln_post``. OpenAI's LayerNorm is PyTorch's
# default (eps 1e-5); mmpretrain's default is 1e-6. The scope prefix makes
# QuickGELU resolve from the mmseg scope.
CLIP_VIT_SETTINGS = dict(
    pre_norm=True,
    final_norm=True,
    out_type='featmap',
    with_cls_token=True,
    interpolate_mode='bicubic',
    norm_cfg=dict(type='LN', eps=1e-5),
    layer_cfgs=dict(act_cfg=dict(type='mmpretrain.QuickGELU')))


@MODELS.register_module()
class CLIPViT(FrozenEvalMixin, VisionTransformer):
    """mmpretrain ``VisionTransformer`` with OpenAI CLIP settings
    (:data:`CLIP_VIT_SETTINGS`) that returns patch-token feature maps and
    CLIP's projected final map, as ETRIS's ``Bridger_ViT`` taps the visual
    tower (``model/bridger.py``; see ``docs/ris_methods.md`` 3.2).

    For input (B, 3, H, W) and patch p the grid is (h, w) = (H / p, W / p)
    (ViT-B/16 at 416: 26 x 26). Every ``out_indices`` entry i gives the
    patch tokens after block i (CLS dropped) as (B, C, h, w), in block
    order, C = width
    (768). The last layer's map is ``ln_post`` (mmpretrain's ``ln1``)
    applied, and with ``output_dim`` it is also multiplied by CLIP's
    projection ``proj`` (C, D): (B, D, h, w), D = 512 for ViT-B/16.

    The positional table has (img_size / p)^2 + 1 rows (224: 197). Other
    input sizes work: mmpretrain resizes the grid part bicubically on every
    forward, and a checkpoint table of another size is resized bicubically
    when loaded (``VisionTransformer._prepare_pos_embed``); so with
    ``img_size=416`` the 197-row OpenAI table becomes a 677-row parameter,
    as ETRIS resizes it once at load.

    Parameter names are mmpretrain's plus ``proj``;
    ``tools/model_converters/clip_to_ris.py`` maps OpenAI ``visual.*``
    keys onto them.

    Args:
        arch (str | dict): mmpretrain arch name ('base' = ViT-B: width 768,
            12 layers, 12 heads, MLP 3072) or a dict with ``embed_dims``,
            ``num_layers``, ``num_heads``, ``feedforward_channels``.
        img_size (int): Pretraining resolution that sizes the positional
            table (OpenAI: 224).
        patch_size (int): p (ViT-B/16: 16).
        out_indices (Sequence[int]): 0-based blocks to return (negative
            counts from the end). ETRIS: (3, 7, 11).
        output_dim (int, optional): D, width of ``proj`` (ViT-B/16: 512);
            None for no projection (the last map stays C wide).
        with_cp (bool): Activation checkpointing of every transformer
            block (as mmpretrain's Swin ``with_cp``; its ViT has none):
            the block's activations are recomputed in backward. Same
            outputs and gradients, less memory, more compute.
        init_cfg (dict, optional): e.g. ``dict(type='Pretrained',
            checkpoint=<converted>, prefix='backbone.')``.
        **kwargs: Other ``VisionTransformer`` arguments (``drop_path_rate``,
            ``frozen_stages``, ...); they override :data:`CLIP_VIT_SETTINGS`.

    Raises:
        ValueError: ``output_dim`` is set but the last block is not in
            ``out_indices`` (``ln_post`` / ``proj`` apply to it only), or
            ``out_type`` is not 'featmap'.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'base',
                 img_size: int = 224,
                 patch_size: int = 16,
                 out_indices: Sequence[int] = (-1, ),
                 output_dim: Optional[int] = 512,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        settings = dict(CLIP_VIT_SETTINGS, **kwargs)
        if settings['out_type'] != 'featmap':
            raise ValueError(f"CLIPViT returns feature maps; out_type must "
                             f"be 'featmap', got {settings['out_type']!r}")
        super().__init__(
            arch=arch,
            img_size=img_size,
            patch_size=patch_size,
            out_indices=list(out_indices),  # mmpretrain edits it in place
            init_cfg=init_cfg,
            **settings)
        last = self.num_layers - 1
        self.with_cp = with_cp
        self.output_dim = output_dim
        if output_dim is not None:
            if last not in self.out_indices:
                raise ValueError(
                    f'output_dim={output_dim} projects the last block '
                    f'({last}), which must be in out_indices; got '
                    f'{list(out_indices)} (or set output_dim=None)')
            self.proj = nn.Parameter(torch.empty(self.embed_dims,
                                                 output_dim))  # (C, D)
            nn.init.normal_(self.proj, std=self.embed_dims**-0.5)
        # Channels per output; mmpretrain returns taps in block order.
        self.out_channels = tuple(
            output_dim if (i == last and output_dim is not None) else
            self.embed_dims for i in sorted(set(self.out_indices)))

    def init_weights(self) -> None:
        """mmpretrain's ViT init, plus OpenAI's ``proj`` init (normal, std
        C^-0.5) unless ``init_cfg`` loads a checkpoint."""
        super().init_weights()
        pretrained = (isinstance(self.init_cfg, dict)
                      and self.init_cfg.get('type') == 'Pretrained')
        if self.output_dim is not None and not pretrained:
            nn.init.normal_(self.proj, std=self.embed_dims**-0.5)

    def _vit_forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """mmpretrain ``VisionTransformer.forward`` (1.2.0) with each block
        called through :func:`maybe_checkpoint` (``with_cp``): (B, 3, H, W)
        -> (B, C, h, w) per ``out_indices`` entry."""
        x, grid = self.patch_embed(x)  # (B, h*w, C)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        x = x + resize_pos_embed(
            self.pos_embed, self.patch_resolution, grid,
            mode=self.interpolate_mode,
            num_extra_tokens=self.num_extra_tokens)  # (B, 1 + h*w, C)
        x = self.pre_norm(self.drop_after_pos(x))
        outs = []
        for i, layer in enumerate(self.layers):
            x = maybe_checkpoint(layer, x, enabled=self.with_cp,
                                 params=layer.parameters())
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, grid))  # (B, C, h, w)
        return tuple(outs)

    def forward(self, x: Tensor) -> Tuple[Tensor, ...]:
        """(B, 3, H, W) -> one map per ``out_indices`` entry: (B, C, h, w),
        the last block's (B, D, h, w) when ``output_dim`` is set."""
        outs = list(self._vit_forward(x))  # (B, C, h, w) each
        if self.output_dim is not None:
            # ln_post was applied by mmpretrain (final_norm); x @ proj.
            outs[-1] = torch.einsum('bchw,cd->bdhw', outs[-1],
                                    self.proj)  # (B, D, h, w)
        return tuple(outs)
