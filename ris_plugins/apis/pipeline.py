"""The test pipeline of a config, split for inference on an image and
sentences that are not in a dataset."""
import copy
import os.path as osp
from typing import Callable, Dict, List, Union

import numpy as np
from mmcv.transforms import Compose
from mmengine.config import Config, ConfigDict

from mmseg.registry import TRANSFORMS

ImageInput = Union[str, np.ndarray]

#: Steps that load annotations, dropped for inference (no ground truth).
ANNOTATION_STEPS = ('LoadRefMask', 'LoadAnnotations')
#: Image loading steps: replaced by :meth:`RefInferencePipeline.load` for
#: arrays.
LOAD_STEPS = ('LoadRefImage', 'LoadImageFromFile', 'InferencerLoader',
              'LoadImageFromNDArray')
TEXT_STEP = 'TokenizeText'


def _type(step: dict) -> str:
    """Registered name of a pipeline step (scope prefix removed)."""
    return str(step.get('type', '')).split('.')[-1]


def describe_input(image: ImageInput, index: int) -> str:
    """How errors name an input image: its path, or ``images[i]`` for an
    array."""
    return repr(image) if isinstance(image, str) else f'images[{index}]'


class RefInferencePipeline:
    """A config's test pipeline for one image and its sentences.

    The steps of ``cfg.test_dataloader.dataset.pipeline`` without the
    annotation loading (:data:`ANNOTATION_STEPS`) are split in three:

    * the loading step (``LoadRefImage``; ``results['img_path']``); arrays
      skip it and enter as ``img`` with ``img_shape`` / ``ori_shape``, as
      mmcv's ``LoadImageFromNDArray`` does;
    * the image steps up to ``TokenizeText`` (e.g. ``Letterbox``), run once
      per image;
    * ``TokenizeText`` and what follows (``PackSegInputs``), run once per
      sentence on a shallow copy of the image's results with ``text`` set.

    The image steps must not read the sentence (in the test pipelines they
    never do; ``RefRandomFlip`` is a training step).

    Args:
        cfg (Config): A RefSegmentor config.

    Raises:
        ValueError: The test pipeline has no image loading step, no
            ``TokenizeText`` step, or ``TokenizeText`` comes before the
            loading step.
    """

    def __init__(self, cfg: Config) -> None:
        steps = [
            copy.deepcopy(s) for s in cfg.test_dataloader.dataset.pipeline
            if _type(s) not in ANNOTATION_STEPS
        ]
        names = [_type(s) for s in steps]
        loads = [i for i, n in enumerate(names) if n in LOAD_STEPS]
        if not loads:
            raise ValueError(
                'test_dataloader.dataset.pipeline has no image loading step '
                f'(one of {LOAD_STEPS}); its steps: {names}')
        if TEXT_STEP not in names:
            raise ValueError(
                'test_dataloader.dataset.pipeline has no TokenizeText step, '
                f'so the sentence cannot reach the model; its steps: {names}')
        load, text = loads[0], names.index(TEXT_STEP)
        if text < load:
            raise ValueError('TokenizeText must come after the image loading '
                             f'step in the test pipeline; steps: {names}')
        load_cfg = steps[load]
        if _type(load_cfg) in ('InferencerLoader', 'LoadImageFromNDArray'):
            load_cfg = dict(type='LoadRefImage')
        self.load_step: Callable = TRANSFORMS.build(load_cfg)
        self.image_steps = Compose(steps[load + 1:text])
        self.text_steps = Compose(steps[text:])

    def load(self, image: ImageInput, index: int = 0) -> Dict:
        """Load one image and run the image steps.

        Args:
            image (str | np.ndarray): A path, or an (H, W, 3) uint8 BGR
                array.
            index (int): Position of the image in the caller's list, for
                messages.

        Returns:
            dict: The pipeline results, plus ``ori_img`` (H, W, 3) uint8
            BGR at the original size (for drawing).

        Raises:
            FileNotFoundError: The path does not exist (named).
            ValueError: The file cannot be decoded (named, from
                ``LoadRefImage``); an array that is not (H, W, 3) uint8.
            TypeError: Neither a path nor an array.
        """
        if isinstance(image, str):
            if not osp.isfile(image):
                raise FileNotFoundError(f'image {image!r} does not exist')
            results = self.load_step(dict(img_path=image))
        elif isinstance(image, np.ndarray):
            check_array(image, index)
            results = dict(img=image, img_path=None,
                           img_shape=image.shape[:2],
                           ori_shape=image.shape[:2])
        else:
            raise TypeError(f'images[{index}] must be a path (str) or an '
                            f'(H, W, 3) uint8 BGR array, got '
                            f'{type(image).__name__}')
        ori_img = results['img']
        results = self.image_steps(results)
        results['ori_img'] = ori_img
        return results

    def with_text(self, results: Dict, text: str) -> Dict:
        """``PackSegInputs`` output (``inputs``, ``data_samples`` with
        ``text_tokens`` / ``text_mask``) of loaded image ``results`` and
        one sentence."""
        sample = {k: v for k, v in results.items() if k != 'ori_img'}
        sample['text'] = text
        return self.text_steps(sample)


def check_array(image: np.ndarray, index: int = 0) -> None:
    """Raise ValueError unless ``image`` is (H, W, 3) uint8 with H, W > 0
    (the message names ``images[index]``, its shape and dtype)."""
    if (image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8
            or 0 in image.shape):
        raise ValueError(
            f'images[{index}] must be an (H, W, 3) uint8 BGR array, got '
            f'shape {image.shape} dtype {image.dtype}')


def check_texts(images: List[ImageInput],
                texts: Union[str, List[str]]) -> List[List[str]]:
    """Pair images with sentences.

    Rules: one sentence per image (``texts`` a list as long as
    ``images``, or a str for a single image), or several sentences for a
    single image (``texts`` a list of any length >= 1).

    Returns:
        list[list[str]]: The sentences of each image.

    Raises:
        ValueError: No images; counts that fit neither rule (both counts
            named); an empty or whitespace-only sentence (its index and its
            image named).
        TypeError: A sentence that is not a str.
    """
    if not images:
        raise ValueError('no images given')
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts) if isinstance(texts, (list, tuple)) else texts
    if not isinstance(texts, list):
        raise TypeError('texts must be a str or a list of str, got '
                        f'{type(texts).__name__}')
    if len(images) == 1 and texts:
        groups = [texts]
    elif len(texts) == len(images):
        groups = [[t] for t in texts]
    else:
        raise ValueError(
            f'{len(images)} images and {len(texts)} sentences: give one '
            'sentence per image, or one image with one or more sentences')
    for i, (image, sentences) in enumerate(zip(images, groups)):
        for k, text in enumerate(sentences):
            where = (f'sentence {k} of image {describe_input(image, i)}')
            if not isinstance(text, str):
                raise TypeError(f'{where} must be a str, got '
                                f'{type(text).__name__}')
            if not text.strip():
                raise ValueError(f'{where} is empty ({text!r}); every '
                                 'sentence must hold words')
    return groups
