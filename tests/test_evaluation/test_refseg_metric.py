import json

import numpy as np
import pytest
import torch

from ris_plugins.evaluation import RefSegMetric, summarize


def sample(pred: np.ndarray, gt: np.ndarray, logits=None) -> dict:
    ds = dict(
        pred_sem_seg=dict(data=torch.as_tensor(pred)[None]),
        gt_sem_seg=dict(data=torch.as_tensor(gt)[None]),
        ref_id=0,
        sent_id=0)
    if logits is not None:
        ds['seg_logits'] = dict(data=torch.as_tensor(logits))
    return ds


def masks_with(inter: int, union: int, size: int = 200):
    """Prediction and GT with exactly `inter` shared and `union` total
    foreground pixels (GT holds the intersection plus the rest)."""
    pred = np.zeros(size, np.int64)
    gt = np.zeros(size, np.int64)
    pred[:inter] = 1
    gt[:union] = 1
    return pred.reshape(10, -1), gt.reshape(10, -1)


def test_docs_test_vector():
    # shared/docs/refcoco_and_eval.md 4.3 (hand-computed there).
    inter = np.array([50, 10, 0])
    union = np.array([100, 10, 40])
    ge = summarize(inter, union, (0.5, ), '>=')
    gt = summarize(inter, union, (0.5, ), '>')
    assert ge['mIoU'] == pytest.approx(50.0)
    assert ge['oIoU'] == pytest.approx(40.0)
    assert ge['Pr@0.5'] == pytest.approx(200 / 3)
    assert gt['Pr@0.5'] == pytest.approx(100 / 3)
    # Sample 4 with I = U = 0 (empty prediction and empty ground truth).
    inter, union = np.append(inter, 0), np.append(union, 0)
    ge = summarize(inter, union, (0.5, ), '>=')
    gt = summarize(inter, union, (0.5, ), '>')
    assert ge['mIoU'] == pytest.approx(37.5)
    assert ge['oIoU'] == pytest.approx(40.0)
    assert ge['Pr@0.5'] == pytest.approx(50.0)
    assert gt['Pr@0.5'] == pytest.approx(25.0)


def test_metric_end_to_end_on_masks():
    metric = RefSegMetric(pr_thresholds=(0.5, 0.9))
    for inter, union in ((50, 100), (10, 10), (0, 40), (0, 0)):
        pred, gt = masks_with(inter, union)
        if inter == 0 and union == 40:
            pred = np.zeros_like(pred)  # empty prediction, non-empty GT
        metric.process({}, [sample(pred, gt)])
    res = metric.compute_metrics(metric.results)
    assert res['mIoU'] == pytest.approx(37.5)
    assert res['oIoU'] == pytest.approx(40.0)
    assert res['Pr@0.5'] == pytest.approx(50.0)
    assert res['Pr@0.9'] == pytest.approx(25.0)
    assert [r['inter'] for r in metric.results] == [50, 10, 0, 0]


def test_empty_prediction_on_nonempty_gt_is_zero():
    metric = RefSegMetric()
    pred, gt = np.zeros((4, 4), np.int64), np.ones((4, 4), np.int64)
    metric.process({}, [sample(pred, gt)])
    res = metric.compute_metrics(metric.results)
    assert res['mIoU'] == 0 and res['oIoU'] == 0


def test_threshold_rebinarises_logits():
    gt = np.array([[1, 1], [0, 0]])
    # one channel: mmseg's postprocessing stores sigmoid probabilities
    logits = torch.tensor([[[0.0, -1.0], [-3.0, -3.0]]])
    probs = logits.sigmoid()  # 0.5, 0.27, 0.05, 0.05
    pred_model = np.zeros((2, 2), np.int64)  # ignored when threshold set
    low = RefSegMetric(threshold=0.35)
    low.process({}, [sample(pred_model, gt, probs)])
    assert low.results[0]['inter'] == 1 and low.results[0]['union'] == 2
    lower = RefSegMetric(threshold=0.25)
    lower.process({}, [sample(pred_model, gt, probs)])
    assert lower.results[0]['inter'] == 2
    # two-channel logits: foreground probability = softmax[1]
    two = torch.stack([torch.zeros(2, 2), logits[0]])
    two_ch = RefSegMetric(threshold=0.3)
    two_ch.process({}, [sample(pred_model, gt, two)])
    assert two_ch.results[0]['inter'] == 1  # softmax gives 0.5, 0.27


def test_bad_arguments_and_shape_mismatch():
    with pytest.raises(ValueError, match='pr_op'):
        RefSegMetric(pr_op='>>')
    with pytest.raises(ValueError, match='threshold'):
        RefSegMetric(threshold=1.5)
    metric = RefSegMetric()
    with pytest.raises(ValueError, match='original resolution'):
        metric.process({}, [sample(np.zeros((2, 2)), np.zeros((3, 3)))])


def _pr(metric, pairs):
    for inter, union in pairs:
        metric.process({}, [sample(*masks_with(inter, union))])
    return metric.compute_metrics(metric.results)


def test_cris_thresholds_count_exact_ties_at_0_7_and_0_9():
    # float32(0.7) = 0.699999988079071 and float32(0.9) = 0.899999976158142
    # (the values of CRIS's torch.arange(0.5, 1.0, 0.1)); CRIS counts
    # I / (U + 1e-6) > t: 70/100.000001 = 0.699999993 > 0.699999988 and
    # 90/100.000001 = 0.899999991 > 0.899999976, so both ties count.
    ties = ((70, 100), (90, 100))
    cris = _pr(RefSegMetric(pr_thresholds='cris', pr_op='>'), ties)
    assert list(cris) == ['oIoU', 'mIoU', 'Pr@0.5', 'Pr@0.6', 'Pr@0.7',
                          'Pr@0.8', 'Pr@0.9']
    assert cris['Pr@0.7'] == pytest.approx(100.0)
    assert cris['Pr@0.9'] == pytest.approx(50.0)
    assert cris['Pr@0.8'] == pytest.approx(50.0)
    assert cris['mIoU'] == pytest.approx(80.0)
    # the default thresholds with '>' do not count the ties ...
    plain = _pr(RefSegMetric(pr_op='>'), ties)
    assert plain['Pr@0.7'] == pytest.approx(50.0)
    assert plain['Pr@0.9'] == pytest.approx(0.0)
    # ... and 0.6 / 0.8 ties do not count in CRIS either
    # (float32(0.6) = 0.600000024, float32(0.8) = 0.800000012)
    low = _pr(RefSegMetric(pr_thresholds='cris', pr_op='>'),
              ((60, 100), (80, 100)))
    assert low['Pr@0.6'] == pytest.approx(50.0)  # only the 0.8 sample
    assert low['Pr@0.8'] == pytest.approx(0.0)


def test_cris_thresholds_keep_the_union_epsilon():
    # 7/(10 + 1e-6) = 0.69999993 < 0.699999988: CRIS does not count it
    # (its 1e-6 shifts the IoU by 0.7e-6/U, more than the float32 gap
    # 1.19e-8 for U < 59).
    res = _pr(RefSegMetric(pr_thresholds='cris', pr_op='>'), ((7, 10), ))
    assert res['Pr@0.7'] == pytest.approx(0.0)
    assert res['Pr@0.6'] == pytest.approx(100.0)


def test_bad_pr_thresholds():
    with pytest.raises(ValueError, match=r"unknown pr_thresholds='lavt'; "
                       r"valid: \('cris',\)"):
        RefSegMetric(pr_thresholds='lavt')
    with pytest.raises(ValueError, match=r"pr_thresholds='cris'.*set "
                       r"pr_op='>' \(got pr_op='>='\)"):
        RefSegMetric(pr_thresholds='cris', pr_op='>=')
    with pytest.raises(ValueError, match=r'pr_thresholds must lie in '
                       r'\[0, 1\], got \[50.0\]'):
        RefSegMetric(pr_thresholds=(0.5, 50))


@pytest.mark.parametrize('name', [
    'cris/cris_r50_8xb8-50e_refcoco-416x416.py',
    'cris/cris_r50_8xb8-50e_refcocog-umd-416x416.py',
    'etris/etris_vit-b16_8xb4-50e_refcoco-416x416.py',
    'barleria/barleria_vit-b16_8xb4-50e_refcoco-416x416.py'])
def test_cris_family_configs_count_pr_as_cris(name):
    from mmengine.config import Config

    from ..conftest import ROOT
    cfg = Config.fromfile(f'{ROOT}/configs/{name}')
    for key in ('val_evaluator', 'test_evaluator'):
        assert cfg[key]['pr_thresholds'] == 'cris'
        assert cfg[key]['pr_op'] == '>'


def test_per_sample_file(tmp_path):
    path = str(tmp_path / 'deep' / 'val_samples.json')
    metric = RefSegMetric(per_sample_file=path)
    metric.dataset_meta = {}
    cases = [(30, 60), (0, 40), (0, 0)]  # hand-made (I, U) per sample
    for k, (inter, union) in enumerate(cases):
        ds = sample(*masks_with(inter, union))
        ds.update(ref_id=10 + k, sent_id=k, img_path=f'im{k}.jpg',
                  text=f'sentence {k}')
        metric.process({}, [ds])
    metric.evaluate(3)
    rows = json.load(open(path))
    assert [(r['ref_id'], r['sent_id'], r['inter'], r['union'])
            for r in rows] == [(10, 0, 30, 60), (11, 1, 0, 40),
                               (12, 2, 0, 0)]
    assert [r['iou'] for r in rows] == [0.5, 0.0, 0.0]
    assert rows[2]['img_path'] == 'im2.jpg'
    assert rows[2]['text'] == 'sentence 2'
    assert [p.name for p in (tmp_path / 'deep').iterdir()] == [
        'val_samples.json']  # no temporary file left behind


def test_per_sample_file_is_never_half_written(tmp_path, monkeypatch):
    path = tmp_path / 'samples.json'
    path.write_text('previous')
    metric = RefSegMetric(per_sample_file=str(path))
    metric.dataset_meta = {}
    ds = sample(*masks_with(5, 10))
    ds['text'] = object()  # not JSON-serialisable: the dump fails midway
    metric.process({}, [ds])
    with pytest.raises(TypeError):
        metric.evaluate(1)
    assert path.read_text() == 'previous'
    assert [p.name for p in tmp_path.iterdir()] == ['samples.json']
