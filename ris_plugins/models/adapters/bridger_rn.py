"""ETRIS's Bridger for CLIP ResNets (``kkakkkka/ETRIS: model/bridger.py``
``Bridger_RN``)."""
from typing import Optional, Sequence, Tuple

import torch.nn as nn
from mmcv.cnn.bricks.transformer import BaseTransformerLayer
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS

LadderState = Tuple[Tensor, Tensor]


def build_interactor(d_model: int, num_heads: int, ffn_dim: int,
                     dropout: float) -> BaseTransformerLayer:
    """ETRIS ``Interactor``: post-norm self-attention -> norm ->
    cross-attention -> norm -> FFN (ReLU) -> norm, dropout on attention
    weights, attention outputs and the FFN (``model/layers.py``), built
    from mmcv's ``BaseTransformerLayer`` on (B, N, C) tensors."""
    attn = dict(
        type='MultiheadAttention',
        embed_dims=d_model,
        num_heads=num_heads,
        attn_drop=dropout,
        proj_drop=dropout,
        batch_first=True)
    return BaseTransformerLayer(
        attn_cfgs=[attn, dict(attn)],
        ffn_cfgs=dict(
            type='FFN',
            embed_dims=d_model,
            feedforward_channels=ffn_dim,
            num_fcs=2,
            ffn_drop=dropout,
            act_cfg=dict(type='ReLU', inplace=True)),
        operation_order=('self_attn', 'norm', 'cross_attn', 'norm', 'ffn',
                         'norm'),
        norm_cfg=dict(type='LN'),
        batch_first=True)


class BridgerRNStage(nn.Module):
    """One stage: zoom-in, (ladder norms are owned by the parent),
    two interactors, zoom-out.

    ``mode='down'``: zoom-in Conv(k=s, stride=s), zoom-out ConvTranspose;
    ``mode='up'``: zoom-in ConvTranspose, zoom-out Conv (all bias-free).
    """

    def __init__(self, visual_dim: int, text_dim: int, d_model: int,
                 stride: int, mode: str, num_heads: int, ffn_dim: int,
                 dropout: float):
        super().__init__()
        down = dict(kernel_size=stride, stride=stride, bias=False)
        if mode == 'down':
            self.zoom_in = nn.Conv2d(visual_dim, d_model, **down)
            self.zoom_out = nn.ConvTranspose2d(d_model, visual_dim, **down)
        elif mode == 'up':
            self.zoom_in = nn.ConvTranspose2d(visual_dim, d_model, **down)
            self.zoom_out = nn.Conv2d(d_model, visual_dim, **down)
        else:
            raise ValueError(f"zoom mode must be 'down' or 'up', got "
                             f'{mode!r}')
        self.txt_in = nn.Linear(text_dim, d_model)
        self.txt_out = nn.Linear(d_model, text_dim)
        self.fusion_v = build_interactor(d_model, num_heads, ffn_dim, dropout)
        self.fusion_t = build_interactor(d_model, num_heads, ffn_dim, dropout)


@MODELS.register_module()
class BridgerRN(BaseModule):
    """ETRIS Bridger for CLIP RN50 / RN101 (Xu et al., ICCV 2023), called
    after ResNet layer2, layer3 and layer4 (stages 0, 1, 2).

    Source: ``kkakkkka/ETRIS`` ``model/bridger.py`` ``Bridger_RN``,
    ``model/layers.py`` ``Interactor``; ``shared/docs/ris_methods.md`` 3.3.
    Stage s with vision (B, C_s, H_s, W_s) and text (B, L, 512)::

        v = zoom_in_s(vis) -> (B, 26*26, d)     t = Linear(txt) (B, L, d)
        if s > 0: v, t = LN_v(v + v_prev), LN_t(t + t_prev)   (ladder)
        state = (v, t)
        v', t' = Interactor_v(v; t), Interactor_t(t; v)   (both from v, t)
        vis += zoom_out_s(v')            txt += Linear(t')

    The ladder carries the previous stage's post-ladder (v, t) (upstream
    ``last_v, last_t = v, t`` after the LayerNorm), passed explicitly
    through ``prev``; the LayerNorm used at stage s is the s-1-th.

    Deliberate choice: ``mask_padding=True`` passes ``pad_mask`` as the key
    padding mask of the text keys (cross-attention of v, self-attention of
    t). [False: upstream, which attends to padding.]

    Parameters for the defaults (RN50 / RN101 widths, d = 64, FFN 128):
    428,992 + 297,920 + 1,215,168 = 1,942,080.

    Args:
        visual_dim (sequence of int): C_s, the visual width at each stage
            (one per hook point; the tower-adapter protocol of
            :class:`DualEncoderBackbone`). Defaults to (512, 1024, 2048).
        text_dim (int): C_t, the text width. Defaults to 512.
        d_model (int): Bridge width d. Defaults to 64.
        num_heads (int): Interactor heads (ETRIS RN: 4). Defaults to 4.
        strides (sequence of int): Resampling factor per stage. Defaults
            to (2, 1, 2).
        zoom_modes (sequence of str): 'down' (conv in, deconv out) or 'up'
            (deconv in, conv out) per stage. Defaults to
            ('down', 'down', 'up') (52^2 -> 26^2, 26^2, 13^2 -> 26^2).
        ffn_dim (int): Interactor FFN width. Defaults to 128.
        dropout (float): Interactor dropout. Defaults to 0.1.
        mask_padding (bool): See above. Defaults to True.
        init_cfg (dict, optional): mmengine init config.

    Raises:
        ValueError: per-stage sequences of different lengths, a bad
            zoom mode.
    """

    def __init__(self,
                 visual_dim: Sequence[int] = (512, 1024, 2048),
                 text_dim: int = 512,
                 d_model: int = 64,
                 num_heads: int = 4,
                 strides: Sequence[int] = (2, 1, 2),
                 zoom_modes: Sequence[str] = ('down', 'down', 'up'),
                 ffn_dim: int = 128,
                 dropout: float = 0.1,
                 mask_padding: bool = True,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if not len(visual_dim) == len(strides) == len(zoom_modes):
            raise ValueError(
                f'visual_dim ({len(visual_dim)}), strides ({len(strides)}) '
                f'and zoom_modes ({len(zoom_modes)}) need one entry per '
                f'stage')
        self.visual_dim = tuple(visual_dim)
        self.text_dim = text_dim
        self.mask_padding = mask_padding
        self.stages = nn.ModuleList(
            BridgerRNStage(c, text_dim, d_model, s, m, num_heads, ffn_dim,
                           dropout)
            for c, s, m in zip(visual_dim, strides, zoom_modes))
        self.ladder_v = nn.ModuleList(
            nn.LayerNorm(d_model) for _ in range(len(visual_dim) - 1))
        self.ladder_t = nn.ModuleList(
            nn.LayerNorm(d_model) for _ in range(len(visual_dim) - 1))
        self._init_etris()

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def _init_etris(self) -> None:
        """ETRIS ``initialize_parameters``: every Linear (including the
        attention output projections) N(0, 0.02) with zero bias, every
        (transposed) conv Kaiming-normal fan_out; the attention input
        projections keep PyTorch's init."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(
                    m.weight, mode='fan_out', nonlinearity='relu')

    def _check(self, stage: int, vis: Tensor, txt: Tensor,
               prev: Optional[LadderState]) -> None:
        if not 0 <= stage < self.num_stages:
            raise ValueError(f'BridgerRN has stages '
                             f'{list(range(self.num_stages))}, got {stage}')
        if vis.dim() != 4 or vis.shape[1] != self.visual_dim[stage]:
            raise ValueError(
                f'stage {stage} expects vision (B, {self.visual_dim[stage]}, '
                f'H, W), got {tuple(vis.shape)}')
        if txt.dim() != 3 or txt.shape[-1] != self.text_dim:
            raise ValueError(f'text must be (B, L, {self.text_dim}) '
                             f'(text_dim), got {tuple(txt.shape)}')
        if stage > 0 and prev is None:
            raise ValueError(f'stage {stage} needs the ladder state `prev` '
                             f'returned by stage {stage - 1}')

    def forward(
        self,
        stage: int,
        vis: Tensor,
        txt: Tensor,
        pad_mask: Optional[Tensor] = None,
        prev: Optional[LadderState] = None
    ) -> Tuple[Tensor, Tensor, LadderState]:
        """Run one bridger stage.

        Args:
            stage (int): 0, 1 or 2 (after ResNet layer2 / layer3 / layer4).
            vis (Tensor): (B, C_s, H_s, W_s) visual map.
            txt (Tensor): (B, L, text_dim) text tokens.
            pad_mask (Tensor, optional): (B, L) bool, True = padding.
            prev (tuple, optional): ladder state returned by stage - 1;
                None at stage 0 (ignored there).

        Returns:
            tuple: vis + residual (B, C_s, H_s, W_s), txt + residual
            (B, L, text_dim), and the ladder state (v (B, N, d),
            t (B, L, d)) for the next stage.

        Raises:
            ValueError: invalid stage, width mismatch (names both numbers),
                missing or mismatched ``prev``, or H_s, W_s that the
                zoom-in / zoom-out do not restore.
        """
        self._check(stage, vis, txt, prev)
        mod = self.stages[stage]
        v = mod.zoom_in(vis)  # (B, d, h, w)
        b, d, h, w = v.shape
        v = v.flatten(2).transpose(1, 2)  # (B, h*w, d)
        t = mod.txt_in(txt)  # (B, L, d)
        if stage > 0:
            pv, pt = prev
            if pv.shape != v.shape or pt.shape != t.shape:
                raise ValueError(
                    f'ladder state of stage {stage - 1} has shapes '
                    f'{tuple(pv.shape)}, {tuple(pt.shape)} but stage '
                    f'{stage} has {tuple(v.shape)}, {tuple(t.shape)}')
            v = self.ladder_v[stage - 1](v + pv)
            t = self.ladder_t[stage - 1](t + pt)
        key_pad = pad_mask.bool() if (self.mask_padding
                                      and pad_mask is not None) else None
        v_new = mod.fusion_v(
            query=v, key=t, value=t, key_padding_mask=key_pad)  # (B, N, d)
        t_new = mod.fusion_t(
            query=t, key=v, value=v,
            query_key_padding_mask=key_pad)  # (B, L, d)
        res = mod.zoom_out(v_new.transpose(1, 2).reshape(b, d, h, w))
        if res.shape != vis.shape:
            raise ValueError(
                f'stage {stage}: zoom-out gives {tuple(res.shape)} but the '
                f'input is {tuple(vis.shape)}; H, W must be multiples of '
                f'the stage stride')
        return vis + res, txt + mod.txt_out(t_new), (v, t)
