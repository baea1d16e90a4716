"""oIoU, mIoU and Pr@X for referring segmentation."""
import json
import os
import os.path as osp
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log

from mmseg.registry import METRICS

PR_OPS = ('>=', '>')
#: CRIS / ETRIS / BarLeRIa ``engine/engine.py`` ``inference``: Pr@X counts
#: ``I / (U + 1e-6) > t`` for ``t in torch.arange(0.5, 1.0, 0.1)`` (float32,
#: i.e. 0.5, 0.60000002384, 0.69999998808, 0.80000001192, 0.89999997616).
CRIS_PR_THRESHOLDS: Tuple[float, ...] = tuple(
    torch.arange(0.5, 1.0, 0.1, dtype=torch.float32).tolist())
CRIS_IOU_EPS = 1e-6
PR_PRESETS = ('cris', )
PrThresholds = Union[str, Sequence[float]]


def resolve_pr_thresholds(
        pr_thresholds: PrThresholds) -> Tuple[List[str], Tuple[float, ...],
                                              float]:
    """Names, values and union epsilon of the Pr@X thresholds.

    Args:
        pr_thresholds: IoU thresholds in [0, 1], or ``'cris'``: CRIS's
            float32 ``torch.arange(0.5, 1.0, 0.1)`` values compared with
            ``I / (U + 1e-6)`` (so an IoU of exactly 0.7 or 0.9 counts
            at Pr@0.7 / Pr@0.9 with ``'>'`` once U > 58 / U > 37 pixels).

    Returns:
        tuple: (names such as ``'Pr@0.7'``, threshold values, epsilon added
        to U for Pr@X only: 1e-6 for ``'cris'``, else 0).

    Raises:
        ValueError: an unknown preset or a threshold outside [0, 1].
    """
    if isinstance(pr_thresholds, str):
        if pr_thresholds not in PR_PRESETS:
            raise ValueError(f'unknown pr_thresholds={pr_thresholds!r}; '
                             f'valid: {PR_PRESETS} or a sequence of floats '
                             'in [0, 1]')
        values = CRIS_PR_THRESHOLDS
        return ([f'Pr@{round(t, 1):g}' for t in values], values,
                CRIS_IOU_EPS)
    values = tuple(float(t) for t in pr_thresholds)
    bad = [t for t in values if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f'pr_thresholds must lie in [0, 1], got {bad}')
    return [f'Pr@{t:g}' for t in values], values, 0.0


def iou_stats(pred: torch.Tensor, gt: torch.Tensor) -> tuple:
    """Intersection and union pixel counts of two binary masks.

    Args:
        pred (Tensor): (H, W) bool prediction.
        gt (Tensor): (H, W) bool ground truth.

    Returns:
        tuple[int, int]: (I, U) in pixels.
    """
    return int((pred & gt).sum()), int((pred | gt).sum())


def summarize(inter: np.ndarray, union: np.ndarray,
              pr_thresholds: PrThresholds, pr_op: str) -> Dict[str, float]:
    """Aggregate per-sample (I, U) into the RIS metrics, all in percent.

    * ``oIoU`` = 100 * sum(I) / sum(U) (overall / cumulative IoU, LAVT);
    * ``mIoU`` = 100 * mean(I / U) (CRIS's "IoU"), with IoU = 0 where U = 0
      (both conventions; ``shared/docs/refcoco_and_eval.md`` 4.2);
    * ``Pr@X`` = 100 * fraction of samples with IoU >= X (LAVT) or > X
      (CRIS), chosen by ``pr_op``; with ``pr_thresholds='cris'`` exactly
      CRIS's count ``I / (U + 1e-6) > float32 arange(0.5, 1.0, 0.1)``
      (see :func:`resolve_pr_thresholds`).

    Args:
        inter (ndarray): (N,) intersections in pixels.
        union (ndarray): (N,) unions in pixels.
        pr_thresholds (Sequence[float] | str): IoU thresholds in [0, 1] or
            ``'cris'``.
        pr_op (str): ``'>='`` or ``'>'``.

    Returns:
        dict[str, float]: ``oIoU``, ``mIoU`` and ``Pr@X`` values in [0, 100].
    """
    inter = inter.astype(np.float64)
    union = union.astype(np.float64)
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    total_union = union.sum()
    results = OrderedDict(
        oIoU=100.0 * inter.sum() / total_union if total_union > 0 else 0.0,
        mIoU=100.0 * iou.mean())
    names, values, eps = resolve_pr_thresholds(pr_thresholds)
    iou_pr = iou if eps == 0 else inter / (union + eps)
    for name, t in zip(names, values):
        hit = iou_pr >= t if pr_op == '>=' else iou_pr > t
        results[name] = 100.0 * hit.mean()
    return results


@METRICS.register_module()
class RefSegMetric(BaseMetric):
    """Referring segmentation metric: oIoU, mIoU and Pr@{0.5, ..., 0.9}.

    Each sample is one (ref, sentence) pair. IoU is computed at the
    resolution of ``gt_sem_seg`` (the original image when the test pipeline
    loads the mask after resizing, as the configs here do) against
    ``pred_sem_seg``, or against re-binarised ``seg_logits`` if
    ``threshold`` is set. Per-sample (I, U) are kept, so results gathered
    from all ranks by :class:`mmengine.evaluator.BaseMetric` are exact under
    distributed evaluation.

    Args:
        threshold (float, optional): None: use the model's ``pred_sem_seg``
            (argmax of 2 classes, or sigmoid > ``decode_head.threshold``).
            A float t in (0, 1): foreground where the foreground probability
            > t, e.g. 0.35 for CRIS. The probability is ``seg_logits``
            itself for 1-channel models (mmseg's postprocessing already
            applied the sigmoid) and the softmax of 2-channel logits.
        pr_thresholds (Sequence[float] | str): IoU thresholds of Pr@X in
            [0, 1], or ``'cris'`` for CRIS / ETRIS / BarLeRIa's exact count
            (float32 ``torch.arange(0.5, 1.0, 0.1)`` thresholds against
            ``I / (U + 1e-6)``; needs ``pr_op='>'``). The default counts an
            IoU of exactly 0.7 at Pr@0.7 only with ``'>='``; ``'cris'``
            counts it with ``'>'``, as CRIS does.
        pr_op (str): ``'>='`` (LAVT) or ``'>'`` (CRIS family).
        per_sample_file (str, optional): Also write every sample's result
            to this JSON file (a list, in evaluation order, of ``ref_id``,
            ``sent_id``, ``img_path``, ``text``, ``inter`` and ``union`` in
            pixels and ``iou`` in [0, 1]), for error analysis or picking
            samples to draw (``tools/run_demo.py``'s contact sheet). The
            file is written whole or not at all (a temporary file renamed
            into place); its folder is created.
        collect_device (str): ``'cpu'`` or ``'gpu'``.
        prefix (str, optional): Metric name prefix.

    Source: definitions in LAVT (``yz93/LAVT-RIS`` ``train.py``
    ``evaluate``) and CRIS (``utils/misc.py``); see
    ``shared/docs/refcoco_and_eval.md`` section 4.

    Raises:
        ValueError: ``pr_op`` not in ``('>=', '>')``, ``threshold`` outside
            (0, 1), an unknown ``pr_thresholds`` preset, a threshold outside
            [0, 1], ``'cris'`` with ``pr_op='>='``, or a prediction whose
            shape differs from its ground truth (the message names the
            sample).
    """

    default_prefix: Optional[str] = None

    def __init__(self,
                 threshold: Optional[float] = None,
                 pr_thresholds: PrThresholds = (0.5, 0.6, 0.7, 0.8, 0.9),
                 pr_op: str = '>=',
                 per_sample_file: Optional[str] = None,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if pr_op not in PR_OPS:
            raise ValueError(f'unknown pr_op {pr_op!r}; valid: {PR_OPS}')
        if threshold is not None and not 0 < threshold < 1:
            raise ValueError(f'threshold must be in (0, 1), got {threshold}')
        resolve_pr_thresholds(pr_thresholds)  # raises on bad values
        if pr_thresholds == 'cris' and pr_op != '>':
            raise ValueError("pr_thresholds='cris' counts IoU > t as CRIS "
                             f"does: set pr_op='>' (got pr_op={pr_op!r})")
        self.threshold = threshold
        self.pr_thresholds = (pr_thresholds if isinstance(pr_thresholds, str)
                              else tuple(pr_thresholds))
        self.pr_op = pr_op
        self.per_sample_file = per_sample_file

    def _binarize(self, data_sample: dict) -> torch.Tensor:
        if self.threshold is None:
            return data_sample['pred_sem_seg']['data'][0] > 0
        scores = data_sample['seg_logits']['data']  # (C, H, W)
        if scores.shape[0] == 1:
            prob = scores[0]  # already sigmoid probabilities
        else:
            prob = scores.softmax(dim=0)[1]
        return prob > self.threshold

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Store (I, U, ref_id, sent_id) of each sample; see class doc."""
        for ds in data_samples:
            pred = self._binarize(ds)  # (H, W)
            gt = ds['gt_sem_seg']['data'][0].to(pred.device) == 1  # (H, W)
            if pred.shape != gt.shape:
                raise ValueError(
                    f'prediction {tuple(pred.shape)} and ground truth '
                    f'{tuple(gt.shape)} differ for {ds.get("img_path")} '
                    f'(ref {ds.get("ref_id")}); IoU needs both at the '
                    'original resolution')
            inter, union = iou_stats(pred, gt)
            self.results.append(
                dict(
                    inter=inter,
                    union=union,
                    ref_id=ds.get('ref_id'),
                    sent_id=ds.get('sent_id'),
                    img_path=ds.get('img_path'),
                    text=ds.get('text')))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Aggregate all samples; see :func:`summarize`."""
        inter = np.array([r['inter'] for r in results])
        union = np.array([r['union'] for r in results])
        metrics = summarize(inter, union, self.pr_thresholds, self.pr_op)
        logger: MMLogger = MMLogger.get_current_instance()
        table = ' | '.join(f'{k}: {v:.2f}' for k, v in metrics.items())
        print_log(f'RefSegMetric over {len(results)} samples: {table}',
                  logger)
        if self.per_sample_file:
            write_per_sample(results, self.per_sample_file)
            print_log(f'per-sample results: {self.per_sample_file}', logger)
        return metrics


def write_per_sample(results: List[dict], path: str) -> None:
    """Write :class:`RefSegMetric`'s per-sample results (with ``iou`` =
    I / U, 0 where U = 0) as a JSON list, atomically: a temporary file in
    the same folder is renamed to ``path``, so a failure leaves no partial
    file."""
    rows = [dict(r, iou=r['inter'] / r['union'] if r['union'] else 0.0)
            for r in results]
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = osp.join(folder, f'.{osp.basename(path)}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'w') as f:
            json.dump(rows, f)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
