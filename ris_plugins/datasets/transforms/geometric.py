"""Geometric transforms that keep the image-sentence pair consistent."""
import re
from typing import Dict, Tuple

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform, RandomFlip

from mmseg.registry import TRANSFORMS

RESIZE_BACKENDS = ('cv2', 'pillow')

_LR_SWAP = {
    'left': 'right', 'right': 'left', 'leftmost': 'rightmost',
    'rightmost': 'leftmost', 'lefthand': 'righthand', 'righthand':
    'lefthand'
}
_LR_PATTERN = re.compile(r'\b(' + '|'.join(_LR_SWAP) + r')\b', re.IGNORECASE)


def swap_left_right(text: str) -> str:
    """Swap left/right words, keeping capitalisation ("Left" -> "Right")."""

    def repl(m: re.Match) -> str:
        word = _LR_SWAP[m.group(0).lower()]
        return word.capitalize() if m.group(0)[0].isupper() else word

    return _LR_PATTERN.sub(repl, text)


@TRANSFORMS.register_module()
class RefRandomFlip(RandomFlip):
    """mmcv ``RandomFlip`` that also swaps left/right words in ``text``.

    Only horizontal flips are allowed: a vertical flip would need "top" and
    "bottom" swapped too and no RIS pipeline uses it.

    Args:
        prob (float): Flip probability in [0, 1].

    Raises:
        ValueError: ``direction`` is not ``'horizontal'``.
    """

    def __init__(self, prob: float = 0.5, direction: str = 'horizontal'):
        if direction != 'horizontal':
            raise ValueError(f'RefRandomFlip supports direction='
                             f"'horizontal' only, got {direction!r}")
        super().__init__(prob=prob, direction=direction)

    def _flip(self, results: dict) -> None:
        super()._flip(results)
        if 'text' in results:
            results['text'] = swap_left_right(results['text'])


@TRANSFORMS.register_module()
class Letterbox(BaseTransform):
    """Resize keeping the aspect ratio, then pad centred to ``scale``.

    The letterbox of CRIS / ETRIS / BarLeRIa (``utils/dataset.py``, there an
    affine warp): scale ``s = min(H / h, W / w)``, image centred on a
    ``pad_val`` canvas. ``img_padding_size`` records the padding so that
    mmseg's ``BaseSegmentor.postprocess_result`` crops it off before
    resizing the logits back to ``ori_shape``.

    Required keys: ``img``; optional: every key in ``seg_fields`` (resized
    with nearest interpolation, padded with ``seg_pad_val``).
    Modified keys: ``img``, ``img_shape``, ``seg_fields`` entries.
    Added keys: ``scale_factor`` (w_scale, h_scale), ``img_padding_size``
    (left, right, top, bottom) in pixels, ``keep_ratio``.

    Args:
        scale (tuple[int, int]): Output (width, height) in pixels.
        interpolation (str): Interpolation of the image (``mmcv.imresize``
            name, e.g. ``'bicubic'``, ``'bilinear'``).
        pad_val (float | tuple): Image fill value (0-255 scale).
        seg_pad_val (int): Mask fill value.
        backend (str): ``mmcv.imresize`` backend for the image and the
            masks: ``'cv2'`` (default) or ``'pillow'`` (PIL's resize, with
            antialiasing when shrinking; needs uint8 arrays), as mmcv's
            ``Resize(backend=...)``.

    Raises:
        ValueError: Non-positive ``scale``, or an unknown ``backend`` (the
            message lists the valid ones).
    """

    def __init__(self,
                 scale: Tuple[int, int],
                 interpolation: str = 'bicubic',
                 pad_val=0,
                 seg_pad_val: int = 0,
                 backend: str = 'cv2') -> None:
        if min(scale) <= 0:
            raise ValueError(f'scale must be positive (w, h), got {scale}')
        if backend not in RESIZE_BACKENDS:
            raise ValueError(f'unknown resize backend {backend!r}; valid: '
                             f'{RESIZE_BACKENDS}')
        self.scale = tuple(scale)
        self.interpolation = interpolation
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val
        self.backend = backend

    def _box(self, h: int, w: int) -> Tuple[int, int, int, int]:
        out_w, out_h = self.scale
        s = min(out_w / w, out_h / h)
        new_w, new_h = max(1, round(w * s)), max(1, round(h * s))
        left, top = (out_w - new_w) // 2, (out_h - new_h) // 2
        return new_w, new_h, left, top

    def _letterbox(self, arr: np.ndarray, new_size: Tuple[int, int],
                   offset: Tuple[int, int], interpolation: str,
                   pad_val) -> np.ndarray:
        out_w, out_h = self.scale
        resized = mmcv.imresize(
            arr, new_size, interpolation=interpolation, backend=self.backend)
        canvas = np.empty((out_h, out_w) + arr.shape[2:], dtype=arr.dtype)
        canvas[...] = pad_val
        left, top = offset
        canvas[top:top + new_size[1], left:left + new_size[0]] = resized
        return canvas

    def transform(self, results: Dict) -> Dict:
        h, w = results['img'].shape[:2]
        new_w, new_h, left, top = self._box(h, w)
        results['img'] = self._letterbox(results['img'], (new_w, new_h),
                                         (left, top), self.interpolation,
                                         self.pad_val)
        for key in results.get('seg_fields', []):
            results[key] = self._letterbox(results[key], (new_w, new_h),
                                           (left, top), 'nearest',
                                           self.seg_pad_val)
        out_w, out_h = self.scale
        results['img_shape'] = (out_h, out_w)
        results['scale_factor'] = (new_w / w, new_h / h)
        results['img_padding_size'] = (left, out_w - new_w - left, top,
                                       out_h - new_h - top)
        results['keep_ratio'] = True
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale={self.scale}, '
                f'backend={self.backend!r})')
