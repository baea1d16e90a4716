"""Model building, strict weight loading and the forward passes behind
:class:`RefSegInferencer`, usable on their own."""
import difflib
import glob
import os.path as osp
import re
import warnings
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.runner.checkpoint import (_load_checkpoint,
                                        _load_checkpoint_to_model)
from torch import Tensor

from mmseg.models.segmentors import BaseSegmentor
from mmseg.models.utils import resize
from mmseg.structures import SegDataSample
from ..models.segmentors.ref_segmentor import reads_text
from ..utils.state_dict import format_mismatch, state_dict_mismatch
from .pipeline import ImageInput, RefInferencePipeline, check_texts

PACKAGE_DIR = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: Where config names are looked up: a clone's ``configs/`` (editable
#: install) and the copy shipped in the package (``ris_plugins/.mim``).
CONFIG_ROOTS = (osp.join(osp.dirname(PACKAGE_DIR), 'configs'),
                osp.join(PACKAGE_DIR, '.mim', 'configs'))


def find_config(name: str) -> str:
    """Path of the config file called ``name`` (with or without ``.py``)
    under :data:`CONFIG_ROOTS`, or ``name`` itself if it is a file.

    Raises:
        FileNotFoundError: No such file or config name (the message lists
            the closest names).
        ValueError: Several configs have this name (listed).
    """
    if osp.isfile(name):
        return name
    base = osp.basename(name)
    base = base if base.endswith('.py') else base + '.py'
    roots = [r for r in CONFIG_ROOTS if osp.isdir(r)]
    found = sorted({
        osp.realpath(p)
        for r in roots for p in glob.glob(
            osp.join(r, '**', base), recursive=True)
    })
    if len(found) == 1:
        return found[0]
    if found:
        raise ValueError(f'several configs are named {base!r}: {found}; '
                         'pass a path')
    names = sorted({
        osp.basename(p)[:-3]
        for r in roots for p in glob.glob(osp.join(r, '**', '*.py'),
                                          recursive=True)
        if '_base_' not in p
    })
    close = difflib.get_close_matches(base[:-3], names, n=5, cutoff=0.3)
    raise FileNotFoundError(
        f'config {name!r} is neither a file nor a config name under '
        f'{list(roots)}; closest names: {close}')


def load_weights(model: nn.Module, filename: str) -> dict:
    """Load a checkpoint into ``model``, strictly.

    Read with mmengine's ``_load_checkpoint`` (``weights_only=True``
    through :mod:`ris_plugins.utils.safe_checkpoint`), checked key by key
    as :class:`StrictLoadHook` checks ``load_from`` (load pre-hooks run;
    a ``module.`` prefix is removed), then loaded with mmengine's
    ``_load_checkpoint_to_model(strict=True)``.

    Args:
        model (nn.Module): The model, built from the config.
        filename (str): Checkpoint path or URL.

    Returns:
        dict: The checkpoint.

    Raises:
        FileNotFoundError, ValueError, RuntimeError: From the safe loader:
            a missing, empty, truncated or refused file (named).
        TypeError: The file does not hold a dict (named).
        ValueError: The weights do not fit the model: names the file, the
            model class, the first missing / unexpected keys and tensors
            of another shape (both shapes).
    """
    checkpoint = _load_checkpoint(filename, map_location='cpu')
    if not isinstance(checkpoint, dict):
        raise TypeError(f'checkpoint {filename!r} holds a '
                        f'{type(checkpoint).__name__}, not a dict of weights '
                        "(or a dict with 'state_dict')")
    state_dict = checkpoint.get('state_dict', checkpoint)
    revised = OrderedDict(
        (re.sub(r'^module\.', '', k), v) for k, v in state_dict.items())
    mismatch = state_dict_mismatch(model, revised)
    if any(mismatch.values()):
        raise ValueError(
            f'checkpoint {filename!r} does not fit the config\'s '
            f'{type(model).__name__} (another model or config?):\n'
            f'{format_mismatch(mismatch)}')
    _load_checkpoint_to_model(model, checkpoint, strict=True)
    return checkpoint


def _expand(feats, k: int):
    """Repeat batch-1 visual features (tensors, or tuples / lists of
    them) ``k`` times along the batch axis."""
    if isinstance(feats, Tensor):
        return feats.expand(k, *feats.shape[1:]).contiguous()
    return type(feats)(_expand(f, k) for f in feats)


def decode_from_visual(model: nn.Module, feats, tokens: Tensor,
                       text_mask: Tensor) -> Tensor:
    """Raw head logits (K, C, h, w) for K sentences from the visual
    features ``feats`` of one image (batch 1), as
    ``RefSegmentor._extract`` + ``_decode`` compute them after the
    backbone: text encoder, fusion, neck, head (only for backbones with
    ``text_input=None``).

    Args:
        model (RefSegmentor): The segmentor.
        feats (tuple[Tensor]): ``model.backbone(img)`` for one image, each
            (1, C_i, h_i, w_i).
        tokens (Tensor): (K, L) int64.
        text_mask (Tensor): (K, L) int64.
    """
    text = model.encode_text(tokens, text_mask)
    feats = _expand(feats, tokens.shape[0])
    if model.fusion is not None:
        feats, text = model.fusion(feats, text)
    if model.with_neck:
        if reads_text(model.neck):
            feats, text = model.neck(feats, text)
        else:
            feats = model.neck(feats)
    return model._decode(feats, text)


@torch.no_grad()
def decode_texts(model: nn.Module,
                 img: Tensor,
                 tokens: Tensor,
                 text_mask: Tensor,
                 batch_size: int = 1,
                 encode_once: Optional[bool] = None) -> Tensor:
    """Logits (K, C, H, W) at the input size of one image and K sentences.

    When the backbone does not read the text (``model.text_input is
    None``: the baseline, CRIS, HARIS), the image is encoded once
    (``model.backbone(img)``) and the text encoder, fusion, neck and head
    run per chunk of ``batch_size`` sentences. Otherwise (LAVT, ETRIS,
    BarLeRIa) the image is repeated and the whole model runs per chunk.
    Both equal K separate ``model.encode_decode`` calls (issue 13, section
    2; see ``tests/test_apis/test_inferencer.py``).

    Args:
        model (RefSegmentor): In eval mode.
        img (Tensor): (1, 3, H, W) normalised image.
        tokens (Tensor): (K, L) int64.
        text_mask (Tensor): (K, L) int64.
        batch_size (int): Sentences per forward.
        encode_once (bool, optional): Force (True, only for
            ``text_input=None``) or forbid (False) encoding the image once;
            None decides by ``model.text_input``.

    Raises:
        ValueError: ``img`` is not one image, ``batch_size < 1``, or
            ``encode_once=True`` for a backbone that reads the text.
    """
    if img.dim() != 4 or img.shape[0] != 1:
        raise ValueError(f'img must be (1, 3, H, W), got {tuple(img.shape)}')
    if batch_size < 1:
        raise ValueError(f'batch_size must be >= 1, got {batch_size}')
    independent = model.text_input is None
    if encode_once and not independent:
        raise ValueError(
            f'{type(model.backbone).__name__} reads the text '
            f'(text_input={model.text_input!r}); the image cannot be '
            'encoded once for several sentences')
    once = independent if encode_once is None else encode_once
    feats = model.backbone(img) if once else None
    out: List[Tensor] = []
    for start in range(0, tokens.shape[0], batch_size):
        tok = tokens[start:start + batch_size]
        msk = text_mask[start:start + batch_size]
        if once:
            logits = decode_from_visual(model, feats, tok, msk)
            out.append(resize(logits, size=img.shape[2:], mode='bilinear',
                              align_corners=model.align_corners))
        else:
            imgs = img.expand(tok.shape[0], *img.shape[1:])
            out.append(model.encode_decode(imgs, tok, msk))
    return torch.cat(out)


def to_original(model: nn.Module, logits: Tensor,
                data_samples: Sequence[SegDataSample]
                ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Mask and probability map of each sample at its original size.

    mmseg's ``BaseSegmentor.postprocess_result`` crops the letterbox
    padding (``img_padding_size``), resizes the logits bilinearly to
    ``ori_shape`` and binarises them (argmax for 2 channels, sigmoid >
    ``decode_head.threshold`` for 1), whatever ``test_cfg.output_size``
    says (LAVT evaluates on its input grid; a user wants the mask on the
    image).

    Args:
        model (RefSegmentor): The segmentor.
        logits (Tensor): (B, C, H, W) at the (padded) input size.
        data_samples (list[SegDataSample]): With ``img_padding_size`` and
            ``ori_shape``; ``seg_logits`` / ``pred_sem_seg`` are set.

    Returns:
        list[tuple]: ``(mask (H, W) uint8 in {0, 1}, prob (H, W) float32 in
        [0, 1])`` per sample: ``prob`` is the sigmoid (1 channel) or the
        softmax of the object channel (2 channels).
    """
    samples = BaseSegmentor.postprocess_result(model, logits,
                                               list(data_samples))
    out = []
    for ds in samples:
        scores = ds.seg_logits.data  # (C, H, W); sigmoid already for C=1
        prob = scores[0] if scores.shape[0] == 1 else scores.softmax(0)[1]
        mask = ds.pred_sem_seg.data[0]
        out.append((mask.cpu().numpy().astype(np.uint8),
                    prob.float().cpu().numpy()))
    return out


@torch.no_grad()
def inference_model(model: nn.Module, img: ImageInput,
                    text: Union[str, List[str]]) -> List[SegDataSample]:
    """mmseg's ``inference_model`` with the sentence(s): one image, one or
    more sentences, on a model from ``mmseg.apis.init_model`` (which sets
    ``model.cfg``).

    mmseg's own ``inference_model(model, img)`` has no way to pass a
    sentence, so it cannot run a referring model; use this function or
    :class:`RefSegInferencer`.

    Args:
        model (RefSegmentor): With ``cfg`` (set by ``init_model``).
        img (str | np.ndarray): Image path or (H, W, 3) uint8 BGR array.
        text (str | list[str]): The sentence(s).

    Returns:
        list[SegDataSample]: One per sentence, with ``seg_logits`` and
        ``pred_sem_seg`` at the image's original size and ``text`` in the
        metainfo.

    Raises:
        ValueError, FileNotFoundError, TypeError: As
            :class:`RefInferencePipeline` and :func:`check_texts`.
    """
    cfg = getattr(model, 'cfg', None)
    if not isinstance(cfg, Config):
        raise ValueError('model has no cfg: build it with '
                         'mmseg.apis.init_model(config, checkpoint)')
    (sentences, ) = check_texts([img], text)
    pipeline = RefInferencePipeline(cfg)
    loaded = pipeline.load(img)
    data = pseudo_collate([pipeline.with_text(loaded, t) for t in sentences])
    batch = model.data_preprocessor(data, False)
    logits = decode_texts(model, batch['inputs'][:1], batch['tokens'],
                          batch['text_mask'], batch_size=len(sentences))
    return BaseSegmentor.postprocess_result(model, logits,
                                            batch['data_samples'])


def warn_random_weights(config: str) -> None:
    """Warn that a model runs on random weights (``weights=None``)."""
    warnings.warn(
        f'RefSegInferencer: no weights given for {config}: the model runs '
        'on RANDOM weights and its masks mean nothing (pass weights=<ckpt> '
        'to use a trained model)', stacklevel=5)
