"""Position features shared by fusion modules and heads."""
import math
from typing import Optional

import torch
from torch import Tensor


def coord_features(x: Tensor) -> Tensor:
    """Normalised (x, y) coordinates in [-1, 1] shaped like ``x``.

    Args:
        x (Tensor): (B, C, H, W).

    Returns:
        Tensor: (B, 2, H, W).
    """
    b, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing='ij')  # (H, W) each
    return torch.stack([grid_x, grid_y]).expand(b, 2, h, w)


def _frequencies(dim: int, device: torch.device) -> Tensor:
    """exp(-log(1e4) * 2k / dim), k = 0 .. dim/2 - 1: (dim / 2,)."""
    return torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=device) *
        (-math.log(10000.0) / dim))


def sine_pos_1d(length: int, dim: int,
                device: Optional[torch.device] = None) -> Tensor:
    """1-D sine positional encoding of CRIS's word tokens (``pos1d``).

    Channel 2k holds sin(p * f_k) and channel 2k + 1 cos(p * f_k) for
    position p and f_k = 10000^(-2k / dim).

    Args:
        length (int): L, number of positions.
        dim (int): D, even.
        device (torch.device, optional): Output device.

    Returns:
        Tensor: (L, D) float32.

    Raises:
        ValueError: ``dim`` is odd.
    """
    if dim % 2:
        raise ValueError(f'1-D sine encoding needs an even dim, got {dim}')
    pos = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    angles = pos * _frequencies(dim, device)  # (L, D/2)
    pe = torch.stack([angles.sin(), angles.cos()], dim=-1)  # (L, D/2, 2)
    return pe.flatten(1)  # (L, D): sin, cos interleaved


def sine_pos_2d(height: int, width: int, dim: int,
                device: Optional[torch.device] = None) -> Tensor:
    """2-D sine positional encoding of CRIS's visual tokens (``pos2d``).

    The first D/2 channels encode the column (x) and the last D/2 the row
    (y), each as a 1-D encoding of width D/2 (sin / cos interleaved with
    frequencies 10000^(-2k / (D/2))).

    Args:
        height (int): H.
        width (int): W.
        dim (int): D, a multiple of 4.
        device (torch.device, optional): Output device.

    Returns:
        Tensor: (H * W, D) float32, rows in row-major (h, w) order.

    Raises:
        ValueError: ``dim`` is not a multiple of 4.
    """
    if dim % 4:
        raise ValueError(f'2-D sine encoding needs dim % 4 == 0, got {dim}')
    half = dim // 2
    pe_x = sine_pos_1d(width, half, device)  # (W, D/2)
    pe_y = sine_pos_1d(height, half, device)  # (H, D/2)
    pe = torch.cat([
        pe_x[None].expand(height, width, half),
        pe_y[:, None].expand(height, width, half)
    ], dim=-1)  # (H, W, D)
    return pe.reshape(height * width, dim)
