"""LAVT's language-aware Swin: mmpretrain's Swin with a PWAM per stage."""
from typing import List, Sequence, Tuple

import torch.nn as nn
from mmpretrain.models.backbones import SwinTransformer
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from mmseg.registry import MODELS
from ..fusion.pwam import PWAM
from ..utils import FrozenEvalMixin, TextFeatures
from ..utils.checkpoint import maybe_checkpoint


@MODELS.register_module()
class MultiModalSwin(FrozenEvalMixin, SwinTransformer):
    """mmpretrain ``SwinTransformer`` with LAVT's PWAM + language gate
    after each stage's blocks and before its patch merging.

    Per stage i: blocks -> ``F_i, E_i = PWAM_i(x, text)`` -> ``E_i`` goes
    to patch merging and the next stage; ``norm{i}(F_i)`` (B, C_i, H_i, W_i)
    is output i for the decoder (upstream ``MultiModalSwinTransformer``,
    ``yz93/LAVT-RIS`` ``lib/backbone.py``). The Swin stages, blocks and
    patch merging are mmpretrain's; only the fusion is added.

    Args:
        text_channels (int): Width of the word features (768, BERT-base).
        pwam_heads (Sequence[int]): PWAM heads per stage (LAVT: 1 each).
        pwam_dropout (float): PWAM dropout (LAVT ``--fusion_drop``, 0).
        pwam_sdpa (bool): PWAM attention through
            ``F.scaled_dot_product_attention`` (default False: explicit
            products, see :class:`PixelWordAttention`).
        **kwargs: :class:`mmpretrain.models.SwinTransformer` arguments, e.g.
            ``arch='base', window_size=12, drop_path_rate=0.3,
            out_indices=(0, 1, 2, 3)``. ``with_cp=True`` checkpoints the
            activations of every Swin block (mmpretrain's ``SwinBlock``)
            and of every PWAM + gate (recomputed in backward): less
            memory, same outputs and gradients, more compute.

    Raises:
        ValueError: ``pwam_heads`` does not have one entry per stage.
    """

    text_input = 'features'  # RefSegmentor calls backbone(img, text)

    def __init__(self,
                 text_channels: int = 768,
                 pwam_heads: Sequence[int] = (1, 1, 1, 1),
                 pwam_dropout: float = 0.0,
                 pwam_sdpa: bool = False,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.with_cp = kwargs.get('with_cp', False)
        if len(pwam_heads) != len(self.stages):
            raise ValueError(f'pwam_heads needs {len(self.stages)} entries '
                             f'(one per stage), got {list(pwam_heads)}')
        self.text_widths = dict(word=text_channels)  # checked at build
        self.pwams = nn.ModuleList(
            PWAM(c, text_channels, h, pwam_dropout, pwam_sdpa)
            for c, h in zip(self.num_features, pwam_heads))

    def forward(self, x: Tensor, text: TextFeatures) -> Tuple[Tensor, ...]:
        """Images (B, 3, H, W) and text -> ``norm{i}(F_i)`` (B, C_i, H/2^(i+2),
        W/2^(i+2)) for i in ``out_indices``."""
        x, hw_shape = self.patch_embed(x)  # (B, N, C_0)
        if self.use_abs_pos_embed:
            x = x + resize_pos_embed(self.absolute_pos_embed,
                                     self.patch_resolution, hw_shape,
                                     self.interpolate_mode,
                                     self.num_extra_tokens)
        x = self.drop_after_pos(x)
        outs: List[Tensor] = []
        for i, (stage, pwam) in enumerate(zip(self.stages, self.pwams)):
            x, hw_shape = stage(x, hw_shape, do_downsample=False)
            fused, x = maybe_checkpoint(
                pwam, x, text, enabled=self.with_cp,
                params=pwam.parameters())  # (B, N_i, C_i) each
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(fused)  # (B, N_i, C_i)
                outs.append(
                    out.view(-1, *hw_shape,
                             self.num_features[i]).permute(0, 3, 1,
                                                           2).contiguous())
            if stage.downsample is not None:
                x, hw_shape = stage.downsample(x, hw_shape)
        return tuple(outs)
