"""``RefSegInferencer``: a trained referring segmentation model on your own
images and sentences."""
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.infer import BaseInferencer
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer
from ..datasets.refcoco import RefCOCODataset
from .inference import (decode_texts, find_config, load_weights,
                        to_original, warn_random_weights)
from .pipeline import (ImageInput, RefInferencePipeline, check_texts,
                       describe_input)

ImagesType = Union[ImageInput, Sequence[ImageInput]]
TextsType = Union[str, Sequence[str]]
#: Overlay colour (RGB) and opacity of the fallback drawing, used when the
#: config's visualizer is mmseg's plain ``SegLocalVisualizer``.
FALLBACK_COLOR = (255, 64, 0)
FALLBACK_ALPHA = 0.5


class _Unit:
    """One image of a call with its sentences (consecutive pairs on the
    same path or array object merge into one unit)."""

    def __init__(self, index: int, image: ImageInput, texts: List[str],
                 first_pair: int) -> None:
        self.index = index  # position of the image in the caller's list
        self.image = image
        self.texts = texts
        self.first_pair = first_pair
        self.loaded: Optional[Dict] = None

    def same_image(self, image: ImageInput) -> bool:
        if isinstance(image, str) and isinstance(self.image, str):
            return osp.abspath(image) == osp.abspath(self.image)
        return image is self.image


class RefSegInferencer(BaseInferencer):
    """Referring image segmentation inferencer: images and sentences in,
    one mask per (image, sentence) pair out.

    Shaped like mmseg's ``MMSegInferencer`` and mmpretrain's
    ``VisualGroundingInferencer`` (mmengine ``BaseInferencer``). The data
    pipeline is the config's test pipeline without the mask loading
    (``LoadRefMask``), with the sentence injected before ``TokenizeText``
    (:class:`RefInferencePipeline`); each image is loaded and resized once
    for all its sentences, and when the backbone does not read the text
    (``model.text_input is None``: the baseline, CRIS, HARIS) it is also
    encoded once (:func:`decode_texts`). Masks and probabilities are
    mapped back to the image's original size with mmseg's
    ``postprocess_result`` (:func:`to_original`).

    Example:
        >>> inferencer = RefSegInferencer(
        ...     'ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160',
        ...     weights='work_dirs/demo/iter_2000.pth', device='cpu')
        >>> out = inferencer('img.png', ['the red circle', 'the star'])
        >>> out['predictions'][0]['mask'].shape  # (H, W) of img.png

    Args:
        model (str | Config): A config path, a config name (file name with
            or without ``.py`` under the clone's ``configs/`` or the
            installed ``ris_plugins/.mim/configs``; see
            :func:`find_config`), or a Config.
        weights (str, optional): Checkpoint, loaded strictly
            (:func:`load_weights`). None runs random weights, with a
            warning. A ``.onnx`` file (``tools/deployment/pytorch2onnx.py``
            of this config) runs the forward in ONNX Runtime
            (:func:`ris_plugins.deploy.use_onnx_backend`).
        device (str, optional): ``'cpu'``, ``'cuda:0'``, ...; None picks
            the available one. SyncBN becomes BN on CPU.
        scope (str): Registry scope. Defaults to ``'mmseg'``.

    Raises:
        FileNotFoundError: Unknown config or missing checkpoint (named).
        ValueError: A checkpoint that does not fit the config (names the
            file and the first keys); a test pipeline without an image
            loading or ``TokenizeText`` step.
    """

    preprocess_kwargs: set = set()
    forward_kwargs: set = set()
    visualize_kwargs: set = {'show', 'wait_time', 'img_out_dir',
                             'return_vis'}
    postprocess_kwargs: set = {'pred_out_dir'}

    def __init__(self,
                 model: Union[str, Config],
                 weights: Optional[str] = None,
                 device: Optional[str] = None,
                 scope: str = 'mmseg') -> None:
        init_default_scope(scope)
        if isinstance(model, str):
            model = find_config(model)
        self.config_name = model if isinstance(model, str) else 'the config'
        super().__init__(model=model, weights=weights, device=device,
                         scope=scope, show_progress=False)
        if device == 'cpu' or not torch.cuda.is_available():
            self.model = revert_sync_batchnorm(self.model)
        if self.visualizer is not None and hasattr(self.visualizer,
                                                   'set_dataset_meta'):
            self.visualizer.set_dataset_meta(**self.model.dataset_meta)

    # ------------------------------------------------------------ set-up
    def _init_model(self, cfg: Config, weights: Optional[str],
                    device: str = 'cpu') -> nn.Module:
        """Build ``cfg.model`` without ``pretrained`` / ``train_cfg`` (as
        mmseg's ``init_model``) and load ``weights`` strictly."""
        cfg.model.pretrained = None
        cfg.model.train_cfg = None
        model = MODELS.build(cfg.model)
        model.cfg = cfg
        if weights is None:
            warn_random_weights(self.config_name)
        elif str(weights).endswith('.onnx'):  # exported model (issue 12)
            from ..deploy import use_onnx_backend
            use_onnx_backend(model, weights)
        else:
            load_weights(model, weights)
        model.dataset_meta = dict(RefCOCODataset.METAINFO)
        model.to(device)
        model.eval()
        return model

    def _init_pipeline(self, cfg: Config) -> RefInferencePipeline:
        return RefInferencePipeline(cfg)

    # ------------------------------------------------------------- call
    def __call__(self,
                 images: ImagesType,
                 texts: TextsType,
                 out_dir: Optional[str] = None,
                 show: bool = False,
                 batch_size: int = 1,
                 return_vis: bool = False,
                 wait_time: float = 0) -> dict:
        """Segment what each sentence refers to.

        Args:
            images (str | np.ndarray | list): A path or an (H, W, 3) uint8
                BGR array, or a list of those.
            texts (str | list[str]): One sentence per image, or for a
                single image a list of one or more sentences (the image is
                loaded, and for text-independent backbones encoded, once).
            out_dir (str, optional): Writes ``vis/<image stem>_<k>.png``
                (the overlay) and ``pred/<image stem>_<k>.png`` (mask,
                0 / 255), k counting the sentences of that image from 0;
                arrays are named ``image<i>``, i their index in ``images``.
                Files are written only after every pair has been predicted.
            show (bool): Show each overlay in a window.
            batch_size (int): Pairs per forward (sentences per text / head
                forward when the image is encoded once).
            return_vis (bool): Return the overlays.
            wait_time (float): Seconds each shown overlay stays.

        Returns:
            dict: ``predictions``: one dict per (image, sentence) pair in
            input order, with ``mask`` (H, W) uint8 in {0, 1} and ``prob``
            (H, W) float32 in [0, 1] at the image's original size, and
            ``text``; ``visualization``: uint8 RGB overlays (H, W, 3), or
            (H + band, W, 3) with the caption band ``RefSegLocalVisualizer``
            appends below the image, one per pair (an empty list unless ``return_vis``, ``out_dir`` or
            ``show``).

        Raises:
            FileNotFoundError: A missing image (named).
            ValueError: An unreadable image (named); an empty sentence
                (its index and image named); a number of sentences that
                fits neither rule (both counts named); ``batch_size < 1``.
            TypeError: An image or a sentence of the wrong type.
        """
        if batch_size < 1:
            raise ValueError(f'batch_size must be >= 1, got {batch_size}')
        image_list = (list(images) if isinstance(images, (list, tuple))
                      else [images])
        units = self._units(image_list, check_texts(image_list, texts))
        self.preprocess(units)
        preds = self.forward(units, batch_size)
        for pred, name in zip(preds, self._file_names(units, preds)):
            pred['name'] = name
        img_out_dir = osp.join(out_dir, 'vis') if out_dir else ''
        visualization = self.visualize(
            units, preds, return_vis=return_vis, show=show,
            wait_time=wait_time, img_out_dir=img_out_dir)
        pred_out_dir = osp.join(out_dir, 'pred') if out_dir else ''
        return self.postprocess(preds, visualization,
                                pred_out_dir=pred_out_dir)

    @staticmethod
    def _units(images: List[ImageInput],
               groups: List[List[str]]) -> List[_Unit]:
        """Merge consecutive pairs on the same image into units."""
        units: List[_Unit] = []
        pair = 0
        for i, (image, texts) in enumerate(zip(images, groups)):
            if units and units[-1].same_image(image):
                units[-1].texts.extend(texts)
            else:
                units.append(_Unit(i, image, list(texts), pair))
            pair += len(texts)
        return units

    def preprocess(self, units: List[_Unit], batch_size: int = 1,
                   **kwargs) -> List[_Unit]:
        """Load every image (each once) and run the image steps, before
        any model work, so a bad image fails the call early."""
        for unit in units:
            unit.loaded = self.pipeline.load(unit.image, unit.index)
        return units

    @torch.no_grad()
    def forward(self, units: List[_Unit], batch_size: int = 1,
                **kwargs) -> List[dict]:
        """Predict every pair: units with several sentences on a
        text-independent backbone encode the image once; all other pairs
        run the whole model in batches of ``batch_size``.

        Returns:
            list[dict]: Per pair in input order: ``mask``, ``prob``,
            ``text``, ``unit`` (index into ``units``).
        """
        preds: List[Optional[dict]] = [None] * sum(len(u.texts)
                                                   for u in units)
        rest: List[Tuple[int, int, str]] = []  # (unit, pair, text)
        for u, unit in enumerate(units):
            pairs = range(unit.first_pair, unit.first_pair + len(unit.texts))
            if self.model.text_input is None and len(unit.texts) > 1:
                self._predict_once(u, unit, list(pairs), preds, batch_size)
            else:
                rest.extend(zip([u] * len(unit.texts), pairs, unit.texts))
        for start in range(0, len(rest), batch_size):
            chunk = rest[start:start + batch_size]
            data = pseudo_collate([
                self.pipeline.with_text(units[u].loaded, text)
                for u, _, text in chunk
            ])
            batch = self.model.data_preprocessor(data, False)
            logits = self.model.encode_decode(batch['inputs'],
                                              batch['tokens'],
                                              batch['text_mask'])
            self._store(preds, chunk, logits, batch['data_samples'])
        return preds

    def _predict_once(self, u: int, unit: _Unit, pairs: List[int],
                      preds: list, batch_size: int) -> None:
        """All sentences of one unit from one encoding of its image."""
        data = pseudo_collate(
            [self.pipeline.with_text(unit.loaded, t) for t in unit.texts])
        batch = self.model.data_preprocessor(data, False)
        logits = decode_texts(self.model, batch['inputs'][:1],
                              batch['tokens'], batch['text_mask'],
                              batch_size=batch_size, encode_once=True)
        self._store(preds, list(zip([u] * len(pairs), pairs, unit.texts)),
                    logits, batch['data_samples'])

    def _store(self, preds: list, chunk: List[Tuple[int, int, str]],
               logits: torch.Tensor, samples: List[SegDataSample]) -> None:
        for (u, pair, text), (mask, prob) in zip(
                chunk, to_original(self.model, logits, samples)):
            preds[pair] = dict(mask=mask, prob=prob, text=text, unit=u)

    # ------------------------------------------------------------ output
    @staticmethod
    def _file_names(units: List[_Unit], preds: List[dict]) -> List[str]:
        """``<image stem>_<k>.png`` per pair; k counts each image's
        sentences; distinct images with the same stem get ``-1``, ``-2``,
        ... so no file is overwritten within a call."""
        stems: Dict[object, str] = {}
        taken: set = set()
        counts: Dict[object, int] = {}
        names = []
        for pred in preds:
            unit = units[pred['unit']]
            key = (osp.abspath(unit.image) if isinstance(unit.image, str)
                   else ('array', unit.index))
            if key not in stems:
                stem = (osp.splitext(osp.basename(unit.image))[0]
                        if isinstance(unit.image, str) else
                        f'image{unit.index}')
                candidate, n = stem, 0
                while candidate in taken:
                    n += 1
                    candidate = f'{stem}-{n}'
                stems[key] = candidate
                taken.add(candidate)
            k = counts.get(key, 0)
            counts[key] = k + 1
            names.append(f'{stems[key]}_{k}.png')
        return names

    def visualize(self,
                  inputs: List[_Unit],
                  preds: List[dict],
                  return_vis: bool = False,
                  show: bool = False,
                  wait_time: float = 0,
                  img_out_dir: str = '') -> List[np.ndarray]:
        """Overlay of each pair, uint8 RGB, drawn by the
        config's visualizer: ``add_datasample(name, image, data_sample,
        draw_gt=False, draw_pred=True, ...)`` with the sentence in the
        data sample's metainfo ``text`` (a ``RefSegLocalVisualizer`` draws
        mask, contour and caption). mmseg's plain ``SegLocalVisualizer``
        would blend the whole image with the background colour, so for it
        (and for a config without a visualizer) the mask is blended in
        :data:`FALLBACK_COLOR` and the sentence written with mmengine's
        drawing primitives instead.

        Returns:
            list[np.ndarray]: Empty unless ``return_vis``, ``show`` or
            ``img_out_dir``.
        """
        if not (return_vis or show or img_out_dir):
            return []
        out = []
        for pred in preds:
            name = pred['name']
            unit = inputs[pred['unit']]
            image = np.ascontiguousarray(unit.loaded['ori_img'][..., ::-1])
            out_file = osp.join(img_out_dir, name) if img_out_dir else None
            out.append(self._draw(name, image, pred, unit, show, wait_time,
                                  out_file))
        return out

    def _data_sample(self, pred: dict, unit: _Unit) -> SegDataSample:
        h, w = pred['mask'].shape
        ds = SegDataSample(metainfo=dict(
            img_path=unit.image if isinstance(unit.image, str) else None,
            ori_shape=(h, w), img_shape=(h, w), text=pred['text']))
        ds.pred_sem_seg = PixelData(
            data=torch.from_numpy(pred['mask'][None].astype(np.int64)))
        ds.seg_logits = PixelData(data=torch.from_numpy(pred['prob'][None]))
        return ds

    def _draw(self, name: str, image: np.ndarray, pred: dict, unit: _Unit,
              show: bool, wait_time: float,
              out_file: Optional[str]) -> np.ndarray:
        """One overlay (see :meth:`visualize`)."""
        vis = self.visualizer
        if vis is not None and (type(vis).add_datasample
                                is not SegLocalVisualizer.add_datasample):
            vis.add_datasample(name, image, self._data_sample(pred, unit),
                               draw_gt=False, draw_pred=True, show=show,
                               wait_time=wait_time, out_file=out_file)
            return vis.get_image()
        drawn = fallback_overlay(image, pred['mask'], pred['text'])
        if show and vis is not None:
            vis.show(drawn, win_name=name, wait_time=wait_time)
        if out_file is not None:
            _imwrite(drawn[..., ::-1], out_file)
        return drawn

    def postprocess(self,
                    preds: List[dict],
                    visualization: List[np.ndarray],
                    return_datasample: bool = False,
                    pred_out_dir: str = '') -> dict:
        """Pack the results; with ``pred_out_dir`` write each mask as
        ``<image stem>_<k>.png`` (0 / 255)."""
        if pred_out_dir:
            for pred in preds:
                _imwrite(pred['mask'] * np.uint8(255),
                         osp.join(pred_out_dir, pred['name']))
        return dict(
            predictions=[{k: p[k] for k in ('mask', 'prob', 'text')}
                         for p in preds],
            visualization=list(visualization))


def fallback_overlay(image: np.ndarray, mask: np.ndarray,
                     text: str) -> np.ndarray:
    """The mask blended into ``image`` in :data:`FALLBACK_COLOR` at
    :data:`FALLBACK_ALPHA`, its contour in full colour, and the sentence
    on a dark band at the top.

    Args:
        image (np.ndarray): (H, W, 3) uint8 RGB.
        mask (np.ndarray): (H, W) uint8 in {0, 1}.
        text (str): The sentence.

    Returns:
        np.ndarray: (H, W, 3) uint8 RGB.
    """
    import cv2
    out = image.astype(np.float32)
    sel = mask.astype(bool)
    color = np.array(FALLBACK_COLOR, np.float32)
    out[sel] = out[sel] * (1 - FALLBACK_ALPHA) + color * FALLBACK_ALPHA
    out = np.ascontiguousarray(out.round().clip(0, 255).astype(np.uint8))
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, FALLBACK_COLOR, 1)
    h, w = out.shape[:2]
    scale = max(0.3, min(h, w) / 500)
    band = int(22 * scale) + 4
    out[:band] = (out[:band] * 0.4).astype(np.uint8)
    cv2.putText(out, text, (3, band - 5), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _imwrite(img: np.ndarray, path: str) -> None:
    """``mmcv.imwrite`` (creates the folder); an error naming ``path`` if
    it fails."""
    if not mmcv.imwrite(img, path):
        raise OSError(f'could not write {path!r}')
