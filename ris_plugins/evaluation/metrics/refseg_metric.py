"""oIoU, mIoU and Pr@X for referring segmentation."""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import MMLogger, print_log

from mmseg.registry import METRICS

PR_OPS = ('>=', '>')


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
              pr_thresholds: Sequence[float], pr_op: str) -> Dict[str, float]:
    """Aggregate per-sample (I, U) into the RIS metrics, all in percent.

    * ``oIoU`` = 100 * sum(I) / sum(U) (overall / cumulative IoU, LAVT);
    * ``mIoU`` = 100 * mean(I / U) (CRIS's "IoU"), with IoU = 0 where U = 0
      (both conventions; ``shared/docs/refcoco_and_eval.md`` 4.2);
    * ``Pr@X`` = 100 * fraction of samples with IoU >= X (LAVT) or > X
      (CRIS), chosen by ``pr_op``.

    Args:
        inter (ndarray): (N,) intersections in pixels.
        union (ndarray): (N,) unions in pixels.
        pr_thresholds (Sequence[float]): IoU thresholds in [0, 1].
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
    for t in pr_thresholds:
        hit = iou >= t if pr_op == '>=' else iou > t
        results[f'Pr@{t:g}'] = 100.0 * hit.mean()
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
        pr_thresholds (Sequence[float]): IoU thresholds of Pr@X.
        pr_op (str): ``'>='`` (LAVT) or ``'>'`` (CRIS family).
        collect_device (str): ``'cpu'`` or ``'gpu'``.
        prefix (str, optional): Metric name prefix.

    Source: definitions in LAVT (``yz93/LAVT-RIS`` ``train.py``
    ``evaluate``) and CRIS (``utils/misc.py``); see
    ``shared/docs/refcoco_and_eval.md`` section 4.

    Raises:
        ValueError: ``pr_op`` not in ``('>=', '>')``, ``threshold`` outside
            (0, 1), or a prediction whose shape differs from its ground
            truth (the message names the sample).
    """

    default_prefix: Optional[str] = None

    def __init__(self,
                 threshold: Optional[float] = None,
                 pr_thresholds: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9),
                 pr_op: str = '>=',
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if pr_op not in PR_OPS:
            raise ValueError(f'unknown pr_op {pr_op!r}; valid: {PR_OPS}')
        if threshold is not None and not 0 < threshold < 1:
            raise ValueError(f'threshold must be in (0, 1), got {threshold}')
        self.threshold = threshold
        self.pr_thresholds = tuple(pr_thresholds)
        self.pr_op = pr_op

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
                    sent_id=ds.get('sent_id')))

    def compute_metrics(self, results: List[dict]) -> Dict[str, float]:
        """Aggregate all samples; see :func:`summarize`."""
        inter = np.array([r['inter'] for r in results])
        union = np.array([r['union'] for r in results])
        metrics = summarize(inter, union, self.pr_thresholds, self.pr_op)
        logger: MMLogger = MMLogger.get_current_instance()
        table = ' | '.join(f'{k}: {v:.2f}' for k, v in metrics.items())
        print_log(f'RefSegMetric over {len(results)} samples: {table}',
                  logger)
        return metrics
