"""ETRIS's Bridger for ViT visual towers (``kkakkkka/ETRIS:
model/bridger.py`` ``Bridger_ViT``)."""
from typing import List, Optional, Tuple

import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS

LadderState = Tuple[Tensor, Tensor]


def _conv_bn_relu(cin: int, cout: int, transposed: bool,
                  norm_cfg: dict) -> nn.Sequential:
    """1x1 (transposed) conv without bias + norm + ReLU (ETRIS
    ``conv_layer`` / ``deconv_layer`` with kernel = stride = 1)."""
    conv = (nn.ConvTranspose2d if transposed else nn.Conv2d)(
        cin, cout, kernel_size=1, bias=False)
    return nn.Sequential(conv, build_norm_layer(norm_cfg, cout)[1],
                         nn.ReLU(inplace=True))


class GatedCrossAttention(nn.Module):
    """ETRIS ``InteractorT``: ``q * MHA(q, kv, kv)`` (multiplicative gate,
    no positional terms, no key padding mask). Sequence-first inputs.

    Args:
        dim (int): Token width d.
        num_heads (int): Attention heads.
        dropout (float): Attention dropout (ETRIS: 0).
    """

    def __init__(self, dim: int, num_heads: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout)

    def forward(self, query: Tensor, memory: Tensor,
                key_padding_mask: Optional[Tensor] = None) -> Tensor:
        """query (N, B, d), memory (M, B, d) -> (N, B, d)."""
        out = self.attn(query, memory, memory,
                        key_padding_mask=key_padding_mask,
                        need_weights=False)[0]
        return query * out


class BridgerStage(nn.Module):
    """One Bridger stage: zoom in, ladder, gated interaction, zoom out.

    Args:
        visual_dim (int): C_v of the visual tower.
        text_dim (int): C_t of the text tower.
        dim (int): Ladder width d (ETRIS: 64).
        num_heads (int): Interaction heads (ETRIS ViT: 8).
        ladder (bool): Has a ladder LayerNorm pair (stages after the
            first).
        transposed_in (bool): Zoom-in is the transposed conv and zoom-out
            the plain conv (ETRIS's last stage), else the reverse.
        norm_cfg (dict): Norm of the zoom convs (ETRIS: BN).
    """

    def __init__(self, visual_dim: int, text_dim: int, dim: int,
                 num_heads: int, ladder: bool, transposed_in: bool,
                 norm_cfg: dict) -> None:
        super().__init__()
        self.zoom_in = _conv_bn_relu(visual_dim, dim, transposed_in,
                                     norm_cfg)
        self.zoom_out = _conv_bn_relu(dim, visual_dim, not transposed_in,
                                      norm_cfg)
        self.text_in = nn.Linear(text_dim, dim)
        self.text_out = nn.Linear(dim, text_dim)
        self.fuse_v = GatedCrossAttention(dim, num_heads)
        self.fuse_t = GatedCrossAttention(dim, num_heads)
        if ladder:
            self.ladder_v = nn.LayerNorm(dim)
            self.ladder_t = nn.LayerNorm(dim)
        else:
            self.ladder_v = self.ladder_t = None


@MODELS.register_module()
class BridgerViT(BaseModule):
    """ETRIS's Bridger between a ViT visual tower and CLIP's text tower,
    one stage per hook point (ETRIS ViT-B/16: after blocks 4, 8, 12).

    Stage s on patch map V (B, C_v, h, w) and text T (B, L, C_t)
    (``ris_methods.md`` 3.2)::

        v = ReLU(BN(Conv1x1(V)))                 (h*w, B, d)  zoom in
        t = Linear(T)                            (L, B, d)
        v, t = LN_v(v + v_prev), LN_t(t + t_prev)  if s > 0 (ladder)
        v, t = v * MHA(v; t), t * MHA(t; v)      both from the pre-update
        V += ReLU(BN(ConvT1x1(v)))               zoom out, patches only
        T += Linear(t)

    The last stage swaps conv and transposed conv (zoom-in ConvT, zoom-out
    Conv), as ETRIS. ``v_prev`` / ``t_prev`` are the previous stage's
    zoom-in outputs after its ladder norm, returned by each call and passed
    back as ``prev`` (:class:`DualEncoderBackbone` carries them). ETRIS's
    init: Linear N(0, 0.02) with zero bias, convs Kaiming-normal (fan_out,
    ReLU); the attention in-projections keep PyTorch's init.

    ETRIS attends to the padding words (no key padding mask);
    ``mask_padding=True`` hides them from the visual queries instead (the
    text queries are left as they are: a padding query still attends to
    the image).

    ViT-B/16 widths (768, 512, d 64, 8 heads, 3 stages): 598,592
    parameters (199,360 for the stage without ladder norms, 199,616 for
    each other). ETRIS stores the ladder norm used by stage s at index s -
    1 of the first two stages; here each stage owns the norms it uses
    (same count, same computation).

    Args:
        visual_dim (int): C_v (ViT-B: 768).
        text_dim (int): C_t (CLIP text: 512).
        dim (int): d (ETRIS ``ladder_dim``: 64).
        num_heads (int): Interaction heads (ETRIS ViT: 8).
        num_stages (int): Stages = hook points (ETRIS: 3).
        norm_cfg (dict): Norm of the zoom convs.
        mask_padding (bool): Mask padding words as keys (above; ETRIS:
            False).
        init_cfg (dict, optional): Initialisation config.

    Raises:
        ValueError: ``num_stages < 1`` or ``dim`` not divisible by
            ``num_heads``; at forward, a stage out of range, inputs whose
            widths differ from ``visual_dim`` / ``text_dim`` (both numbers
            named), or a stage s > 0 without ``prev``.
    """

    def __init__(self,
                 visual_dim: int = 768,
                 text_dim: int = 512,
                 dim: int = 64,
                 num_heads: int = 8,
                 num_stages: int = 3,
                 norm_cfg: dict = dict(type='BN'),
                 mask_padding: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_stages < 1:
            raise ValueError(f'num_stages must be >= 1, got {num_stages}')
        if dim % num_heads:
            raise ValueError(f'dim={dim} is not divisible by '
                             f'num_heads={num_heads}')
        self.visual_dim = visual_dim
        self.text_dim = text_dim
        self.num_stages = num_stages
        self.stages = nn.ModuleList(
            BridgerStage(visual_dim, text_dim, dim, num_heads, ladder=s > 0,
                         transposed_in=s == num_stages - 1,
                         norm_cfg=norm_cfg) for s in range(num_stages))
        self.mask_padding = mask_padding
        self._etris_init()

    def _etris_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode='fan_out',
                                        nonlinearity='relu')

    def init_weights(self) -> None:
        """ETRIS's init (see class doc) unless ``init_cfg`` is given."""
        if self.init_cfg is not None:
            super().init_weights()
        else:
            self._etris_init()
            self._is_init = True

    def _check(self, stage: int, vis: Tensor, txt: Tensor,
               prev: Optional[LadderState]) -> None:
        if not 0 <= stage < self.num_stages:
            raise ValueError(f'stage {stage} out of range: BridgerViT has '
                             f'{self.num_stages} stages')
        if vis.shape[1] != self.visual_dim or txt.shape[-1] != self.text_dim:
            raise ValueError(
                f'BridgerViT was built for visual width {self.visual_dim} '
                f'and text width {self.text_dim}, got {vis.shape[1]} and '
                f'{txt.shape[-1]}')
        if stage > 0 and prev is None:
            raise ValueError(f'BridgerViT stage {stage} needs the ladder '
                             f'state `prev` returned by stage {stage - 1}')

    def forward(self,
                stage: int,
                vis: Tensor,
                txt: Tensor,
                pad_mask: Optional[Tensor] = None,
                prev: Optional[LadderState] = None
                ) -> Tuple[Tensor, Tensor, LadderState]:
        """Run stage ``stage``.

        Args:
            stage (int): 0-based stage (the hook point's step).
            vis (Tensor): (B, C_v, h, w) patch map.
            txt (Tensor): (B, L, C_t) text tokens.
            pad_mask (Tensor, optional): (B, L) bool, True at padding; used
                as the key padding mask of the visual queries only with
                ``mask_padding``.
            prev (tuple, optional): Ladder state returned by stage - 1
                (None at stage 0, ignored there).

        Returns:
            tuple: ``vis`` + residual (B, C_v, h, w), ``txt`` + residual
            (B, L, C_t), and the ladder state (v (h*w, B, d), t (L, B, d))
            for the next stage.
        """
        self._check(stage, vis, txt, prev)
        m = self.stages[stage]
        b, _, h, w = vis.shape
        v = m.zoom_in(vis).flatten(2).permute(2, 0, 1)  # (h*w, B, d)
        t = m.text_in(txt).transpose(0, 1)  # (L, B, d)
        if m.ladder_v is not None:
            v = m.ladder_v(v + prev[0])
            t = m.ladder_t(t + prev[1])
        ladder = (v, t)
        key_mask = pad_mask if self.mask_padding else None
        v, t = m.fuse_v(v, t, key_mask), m.fuse_t(t, v)  # pre-update v, t
        v = v.permute(1, 2, 0).reshape(b, -1, h, w)  # (B, d, h, w)
        vis = vis + m.zoom_out(v)  # (B, C_v, h, w)
        txt = txt + m.text_out(t).transpose(0, 1)  # (B, L, C_t)
        return vis, txt, ladder

    @property
    def stage_params(self) -> List[int]:
        """Parameters per stage."""
        return [sum(p.numel() for p in s.parameters()) for s in self.stages]
