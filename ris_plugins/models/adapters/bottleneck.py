"""Bottleneck adapter (Houlsby et al., ICML 2019)."""
from typing import Optional

import torch.nn as nn
from mmcv.cnn import build_activation_layer
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS


@MODELS.register_module()
class BottleneckAdapter(BaseModule):
    """Residual bottleneck adapter::

        y = x + scale * up(act(down(x)))      down: dim -> hidden,
                                              up: hidden -> dim

    ``up`` is zero-initialised (weight and bias), so the adapter is the
    identity at init while ``down`` still receives gradients once ``up``
    moves (Houlsby et al., "Parameter-Efficient Transfer Learning for NLP",
    ICML 2019, Fig. 2; AdaptFormer, NeurIPS 2022, eq. 5 for ``scale``).
    Works on any (..., dim) tensor. Parameters: 2 * dim * hidden + hidden
    + dim.

    Args:
        dim (int): Input / output width.
        hidden (int): Bottleneck width (>= 1).
        scale (float): Residual scale. Defaults to 1.
        act_cfg (dict): Activation. Defaults to ``dict(type='ReLU')``.
        dropout (float): Dropout after the activation. Defaults to 0.
        init_cfg (dict, optional): mmengine init config.

    Raises:
        ValueError: ``dim`` or ``hidden`` < 1.
    """

    def __init__(self,
                 dim: int,
                 hidden: int,
                 scale: float = 1.,
                 act_cfg: dict = dict(type='ReLU'),
                 dropout: float = 0.,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if dim < 1 or hidden < 1:
            raise ValueError(f'BottleneckAdapter needs dim >= 1 and hidden '
                             f'>= 1, got dim={dim}, hidden={hidden}')
        self.dim, self.scale = dim, scale
        self.down = nn.Linear(dim, hidden)
        self.act = build_activation_layer(act_cfg)
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., dim) -> (..., dim).

        Raises:
            ValueError: last dimension is not ``dim``.
        """
        if x.shape[-1] != self.dim:
            raise ValueError(f'BottleneckAdapter(dim={self.dim}) got input '
                             f'with last dimension {x.shape[-1]}')
        return x + self.scale * self.up(self.drop(self.act(self.down(x))))
