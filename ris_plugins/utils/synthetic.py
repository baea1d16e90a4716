"""Synthetic batches shaped like a config's data, for benchmarks.

Speed and memory do not depend on the pixels or on which sentence is read,
so benchmarks feed random images at the config's input size and a real
sentence tokenized by the config's own ``TokenizeText`` step (so the token
ids, length and end-of-text token suit its text encoder).
"""
from typing import Dict, List, Tuple

import torch
from mmengine.config import Config
from mmengine.structures import PixelData

from mmseg.registry import TRANSFORMS
from mmseg.structures import SegDataSample

SENTENCE = 'the small red circle left of the blue square'


def input_size(cfg: Config) -> Tuple[int, int]:
    """(H, W) in pixels the config's model sees: its data preprocessor's
    ``size``.

    Raises:
        ValueError: The data preprocessor has no ``size``.
    """
    size = cfg.model.get('data_preprocessor', {}).get('size')
    if not size:
        raise ValueError(
            'model.data_preprocessor.size is not set in this config; '
            'synthetic batches need a fixed input size')
    return tuple(size)


def tokenize(cfg: Config, sentence: str = SENTENCE) -> Dict[str, torch.Tensor]:
    """``text_tokens`` / ``text_mask`` ((L,) int64 each) of ``sentence``
    from the ``TokenizeText`` step of the config's train pipeline.

    Raises:
        ValueError: The train pipeline has no ``TokenizeText`` step.
    """
    pipeline = cfg.train_dataloader.dataset.get('pipeline', [])
    steps = [t for t in pipeline if t.get('type') == 'TokenizeText']
    if not steps:
        raise ValueError('train_dataloader.dataset.pipeline has no '
                         'TokenizeText step')
    out = TRANSFORMS.build(steps[0])(dict(text=sentence))
    return {k: torch.as_tensor(out[k]) for k in ('text_tokens', 'text_mask')}


def synthetic_inputs(cfg: Config, n: int,
                     seed: int = 0) -> List[Tuple[torch.Tensor, ...]]:
    """``n`` plain-tensor inputs of ``RefSegmentor.forward``.

    Args:
        cfg (Config): A RefSegmentor config.
        n (int): Number of samples.
        seed (int): Seed of the random (normalised) images.

    Returns:
        list[tuple]: ``(img (1, 3, H, W) float, tokens (1, L) int64,
        text_mask (1, L) int64)`` per sample.
    """
    h, w = input_size(cfg)
    text = tokenize(cfg)
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(1, 3, h, w, generator=g), text['text_tokens'][None],
             text['text_mask'][None]) for _ in range(n)]


def synthetic_batch(cfg: Config, batch: int, seed: int = 0) -> dict:
    """A training batch in the form ``model.train_step`` takes.

    Args:
        cfg (Config): A RefSegmentor config.
        batch (int): B, number of samples.
        seed (int): Seed of the random images and masks.

    Returns:
        dict: ``inputs``: B uint8 images (3, H, W); ``data_samples``: B
        :class:`SegDataSample` with ``gt_sem_seg`` (1, H, W) in {0, 1}
        and the metainfo the model reads (tokens, shapes, padding).
    """
    h, w = input_size(cfg)
    text = tokenize(cfg)
    g = torch.Generator().manual_seed(seed)
    inputs: List[torch.Tensor] = []
    samples: List[SegDataSample] = []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), generator=g,
                                    dtype=torch.uint8))
        ds = SegDataSample(metainfo=dict(
            **text, img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
            img_padding_size=(0, 0, 0, 0), text=SENTENCE))
        ds.gt_sem_seg = PixelData(
            data=torch.randint(0, 2, (1, h, w), generator=g))
        samples.append(ds)
    return dict(inputs=inputs, data_samples=samples)
