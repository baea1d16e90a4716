"""BarLeRIa's Shortcut Normalizing Flows (``NastrondAd/BarLeRIa: snf.py``,
``flow.py``)."""
from typing import Optional, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS

TOWERS = ('visual', 'text')


class PlanarFlowStep(nn.Module):
    """Planar flow ``z + u * tanh(w . z + b)`` (Rezende & Mohamed 2015,
    eq. 10; BarLeRIa ``flow.py`` ``PlanarFlow``, without the invertibility
    reparametrisation of u, as released). u, w (d,), b scalar, initialised
    U(-init, init).

    Args:
        dim (int): d.
        init (float): Half-width of the uniform init (BarLeRIa: 0.01).
    """

    def __init__(self, dim: int, init: float = 0.01) -> None:
        super().__init__()
        self.u = nn.Parameter(torch.empty(dim).uniform_(-init, init))
        self.w = nn.Parameter(torch.empty(dim).uniform_(-init, init))
        self.b = nn.Parameter(torch.empty(1).uniform_(-init, init))

    def forward(self, z: Tensor) -> Tensor:
        """(..., d) -> (..., d)."""
        return z + self.u * torch.tanh(z @ self.w + self.b)[..., None]


class ShortcutFlow(nn.Module):
    """Affine step ``mu + exp(log_sigma) * z`` (mu = log_sigma = 0 at init)
    followed by K planar steps; replaces one identity shortcut. The
    log-determinant is not computed (BarLeRIa does not use it).
    2d + K(2d + 1) parameters.

    Args:
        dim (int): d.
        flow_length (int): K (BarLeRIa: 4).
        init (float): Planar init half-width (BarLeRIa: 0.01).
    """

    def __init__(self, dim: int, flow_length: int = 4,
                 init: float = 0.01) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_sigma = nn.Parameter(torch.zeros(dim))
        self.steps = nn.Sequential(
            *(PlanarFlowStep(dim, init) for _ in range(flow_length)))

    def forward(self, z: Tensor) -> Tensor:
        """(..., d) -> (..., d)."""
        return self.steps(self.mu + self.log_sigma.exp() * z)


@MODELS.register_module()
class SNF(BaseModule):
    """Shortcut Normalizing Flows: both identity shortcuts of every block
    of both towers become a :class:`ShortcutFlow` (BarLeRIa, ICLR 2024;
    ``snf.py`` ``set_snf`` + ``forward_flow_block``)::

        x = NF1(x) + Attn(LN1 x);   x = NF2(x) + MLP(LN2 x)

    The blocks themselves are not replaced: :class:`DualEncoderBackbone`
    asks :meth:`shortcuts` for block i's pair and runs the library block's
    submodules around them, so the tower's parameter names (and
    checkpoints) are unchanged.

    ViT-B/16 + CLIP text (768 x 12, 512 x 12, K = 4): 24 x 7,684 + 24 x
    5,124 = 307,392 parameters (``ris_methods.md`` 4.1).

    Args:
        visual_dim (int): C_v.
        text_dim (int): C_t.
        visual_layers (int): Visual blocks (must equal the tower's).
        text_layers (int): Text blocks (must equal the tower's).
        flow_length (int): K.
        init (float): Planar init half-width.
        init_cfg (dict, optional): Initialisation config.

    Raises:
        ValueError: In :meth:`check_towers`, depths or widths that differ
            from the encoder's (both numbers named); in :meth:`shortcuts`,
            an unknown tower or block.
    """

    def __init__(self,
                 visual_dim: int = 768,
                 text_dim: int = 512,
                 visual_layers: int = 12,
                 text_layers: int = 12,
                 flow_length: int = 4,
                 init: float = 0.01,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        # Tower-adapter protocol (DualEncoderBackbone): the widths built for.
        self.visual_dim, self.text_dim = visual_dim, text_dim
        self.depths = dict(visual=visual_layers, text=text_layers)

        def flows(dim: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(
                nn.ModuleList(
                    ShortcutFlow(dim, flow_length, init) for _ in range(2))
                for _ in range(n))

        self.visual = flows(visual_dim, visual_layers)
        self.text = flows(text_dim, text_layers)

    def init_weights(self) -> None:
        """Keep the constructor's near-identity init."""
        self._is_init = True

    def check_towers(self, visual_layers: int, visual_dim: int,
                     text_layers: int, text_dim: int) -> None:
        """Raise if the encoder's depths / widths differ from this SNF's."""
        got = dict(visual=(visual_layers, visual_dim),
                   text=(text_layers, text_dim))
        for tower in TOWERS:
            n, d = got[tower]
            if n != self.depths[tower]:
                raise ValueError(
                    f'SNF {tower}_layers={self.depths[tower]} but the '
                    f'{tower} tower has {n} blocks')
            width = getattr(self, f'{tower}_dim')
            if d != width:
                raise ValueError(f'SNF {tower}_dim={width} but the {tower} '
                                 f'tower is {d} wide')

    def shortcuts(self, tower: str,
                  index: int) -> Tuple[ShortcutFlow, ShortcutFlow]:
        """The (attention, MLP) shortcut flows of 0-based block ``index``
        of ``tower`` ('visual' or 'text')."""
        if tower not in TOWERS:
            raise ValueError(f'unknown tower {tower!r}; valid: {TOWERS}')
        flows = getattr(self, tower)
        if not 0 <= index < len(flows):
            raise ValueError(f'SNF has no {tower} block {index} (0..'
                             f'{len(flows) - 1})')
        return flows[index][0], flows[index][1]
