"""Export-time replacements for library code that freezes the batch size.

Only used inside :func:`export_patches` while a graph is traced; the
replacements compute exactly the same tensors (pure reshapes).
"""
import contextlib
from typing import Iterator

from mmpretrain.models.utils.attention import ShiftWindowMSA
from torch import Tensor


def _window_reverse(windows: Tensor, H: int, W: int,
                    window_size: int) -> Tensor:
    """mmpretrain ``ShiftWindowMSA.window_reverse`` (windows
    (B*nW, ws, ws, C) -> (B, H, W, C)) without its
    ``B = int(windows.shape[0] / ...)``, which a traced export turns into
    a constant (the exported Swin then only runs at the example's batch
    size)."""
    c = windows.shape[-1]
    x = windows.view(-1, H // window_size, W // window_size, window_size,
                     window_size, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, c)


@contextlib.contextmanager
def export_patches() -> Iterator[None]:
    """Swap in the batch-agnostic versions above for the duration of an
    export; the originals are restored on exit (errors included)."""
    original = ShiftWindowMSA.__dict__['window_reverse']
    ShiftWindowMSA.window_reverse = staticmethod(_window_reverse)
    try:
        yield
    finally:
        ShiftWindowMSA.window_reverse = original
