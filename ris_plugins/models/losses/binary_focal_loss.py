"""Sigmoid focal loss for 1-channel (binary) mask logits."""
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from mmseg.registry import MODELS

REDUCTIONS = ('mean', 'sum', 'none')


@MODELS.register_module()
class BinaryFocalLoss(nn.Module):
    """Sigmoid focal loss (Lin et al., ICCV 2017, eq. 5) of 1-channel
    logits against a 0/1 label map, averaged over non-ignored pixels.

    ``FL = -alpha_t (1 - p_t)^gamma log(p_t)`` per pixel, computed by
    ``torchvision.ops.sigmoid_focal_loss`` (``alpha < 0`` disables the
    balance term, as there). mmseg's ``FocalLoss`` is not used because on
    CPU it compares (N, 1) logits with an (N,) target for one class, and
    with a (B, 1, H, W) target it derives the class by an argmax over one
    channel (always 0).

    Args:
        alpha (float): Weight of the positive class in [0, 1]; < 0 for no
            balancing (SAM: 0.25, gamma 2).
        gamma (float): Focusing exponent >= 0.
        reduction (str): 'mean' (over valid pixels) | 'sum' | 'none'.
        loss_weight (float): Multiplier.
        loss_name (str): Name in the loss dict (must start with 'loss_').

    Raises:
        ValueError: Bad ``reduction`` / ``gamma`` / ``alpha > 1``; at
            forward, logits not (B, 1, H, W) or a label whose shape is not
            (B, H, W) / (B, 1, H, W) of the same size.
    """

    def __init__(self,
                 alpha: float = 0.25,
                 gamma: float = 2.0,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 loss_name: str = 'loss_focal') -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f'unknown reduction {reduction!r}; valid: '
                             f'{REDUCTIONS}')
        if gamma < 0 or alpha > 1:
            raise ValueError(f'need gamma >= 0 and alpha <= 1, got gamma='
                             f'{gamma}, alpha={alpha}')
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction
        self.loss_weight = loss_weight
        self._loss_name = loss_name

    @property
    def loss_name(self) -> str:
        return self._loss_name

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                ignore_index: int = 255,
                **kwargs) -> Tensor:
        """Loss of logits ``pred`` (B, 1, H, W) and label ``target``
        (B, H, W) or (B, 1, H, W) with values 0 / 1 / ``ignore_index``;
        ``weight`` (optional) broadcasts to (B, 1, H, W)."""
        if pred.dim() != 4 or pred.shape[1] != 1:
            raise ValueError(f'BinaryFocalLoss needs (B, 1, H, W) logits, '
                             f'got {tuple(pred.shape)}')
        if target.dim() == 3:
            target = target[:, None]  # (B, 1, H, W)
        if target.shape != pred.shape:
            raise ValueError(f'label shape {tuple(target.shape)} does not '
                             f'match logits {tuple(pred.shape)}')
        valid = (target != ignore_index).to(pred)  # (B, 1, H, W)
        target = torch.where(target == ignore_index,
                             torch.zeros_like(target), target).to(pred)
        loss = sigmoid_focal_loss(pred, target, alpha=self.alpha,
                                  gamma=self.gamma, reduction='none')
        loss = loss * valid
        if weight is not None:
            loss = loss * weight
        if self.reduction == 'mean':
            loss = loss.sum() / valid.sum().clamp(min=1)
        elif self.reduction == 'sum':
            loss = loss.sum()
        return self.loss_weight * loss
