"""Run an exported RIS model with ONNX Runtime like the PyTorch model.

:class:`ORTSegmentor` has the call of ``RefSegmentor``'s plain-tensor
forward, ``(img, tokens, mask) -> logits``, so code written for the
PyTorch model (an inferencer, a benchmark) can take the ``.onnx`` file
instead.
"""
from typing import List, Optional, Union

import numpy as np
import torch
from torch import Tensor

from .export import INPUT_NAMES, check_inputs, ort_session


def run_session(session, img: Tensor, tokens: Tensor,
                mask: Tensor) -> np.ndarray:
    """One ONNX Runtime run on torch tensors -> logits (B, C, h, w)."""
    feeds = {'img': img.detach().cpu().float().numpy(),
             'tokens': tokens.detach().cpu().long().numpy(),
             'mask': mask.detach().cpu().long().numpy()}
    return session.run(None, feeds)[0]


class ORTSegmentor:
    """An exported RIS model (``tools/deployment/pytorch2onnx.py``) on
    ONNX Runtime's CPU provider.

    ``model(img, tokens, mask)``: img (B, 3, H, W) float32 normalised as
    the config's data preprocessor does, tokens / mask (B, L) int64 ->
    logits (B, C, h, w) float32 torch tensor, as
    ``RefSegmentor.forward(img, tokens, mask)``.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (None: ONNX Runtime's default).

    Raises:
        FileNotFoundError: no such file.
        ValueError: ONNX Runtime cannot load it, or its inputs are not
            ``img``, ``tokens``, ``mask`` (naming the file and what it has).
    """

    def __init__(self, path: str, threads: Optional[int] = None) -> None:
        self.path = path
        self.session = ort_session(path, threads)
        found = [i.name for i in self.session.get_inputs()]
        if found != list(INPUT_NAMES):
            raise ValueError(f'{path} is not an exported RIS model: its '
                             f'inputs are {found}, expected '
                             f'{list(INPUT_NAMES)}')
        #: fixed sizes of the graph's inputs (None where dynamic)
        self.input_shapes = {
            i.name: [d if isinstance(d, int) else None for d in i.shape]
            for i in self.session.get_inputs()}

    @property
    def image_size(self) -> List[Optional[int]]:
        """(H, W) the graph was exported for."""
        return self.input_shapes['img'][2:]

    @property
    def text_length(self) -> Optional[int]:
        """L, the token length the graph was exported for."""
        return self.input_shapes['tokens'][1]

    def _check_shapes(self, img: Tensor, tokens: Tensor) -> None:
        for name, t in (('img', img), ('tokens', tokens)):
            want = self.input_shapes[name]
            if any(w is not None and w != g for w, g in zip(want, t.shape)):
                raise ValueError(
                    f'input {name!r} has shape {tuple(t.shape)} but '
                    f'{self.path} was exported for {want} (None: any); '
                    're-export with --shape / the same tokenizer length')

    def __call__(self, img: Tensor, tokens: Tensor,
                 mask: Union[Tensor, None] = None) -> Tensor:
        img, tokens, mask = check_inputs((img, tokens, mask))
        self._check_shapes(img, tokens)
        return torch.from_numpy(run_session(self.session, img, tokens, mask))

    def __repr__(self) -> str:
        return f'ORTSegmentor({self.path!r})'


def use_onnx_backend(model, path: str, threads: Optional[int] = None):
    """Make a built ``RefSegmentor`` run its tensor forward in ONNX Runtime.

    The PyTorch model keeps everything around the forward (data
    preprocessor, ``encode_decode``'s resize, ``postprocess_result``,
    thresholds), so ``predict`` / ``test_step`` / ``RefSegInferencer``
    work unchanged on the exported file. ``_forward`` becomes an
    :class:`ORTSegmentor` and ``text_input`` is set to ``'onnx'`` so no
    caller splits the forward (e.g. encoding the image once for several
    sentences, which needs the PyTorch backbone).

    Args:
        model: the ``RefSegmentor`` built from the config the file was
            exported from (its weights are not used).
        path: the ``.onnx`` file.

    Returns:
        the model (changed in place).

    Raises:
        FileNotFoundError, ValueError: see :class:`ORTSegmentor`.
    """
    model._forward = ORTSegmentor(path, threads=threads)
    model.text_input = 'onnx'
    return model
