"""Contact sheet: selection by IoU, tiles drawn by the visualizer, and
predictions collected through the Runner's test loop."""
import cv2
import numpy as np
import pytest

from ris_plugins.visualization import (collect_predictions, contact_sheet,
                                       record_of, sample_of, select_samples,
                                       write_contact_sheet)

from ..conftest import rect, sample, tiny_cfg


def test_select_best_worst_random():
    ious = [0.5, 0.9, 0.1, 0.95, 0.3, 0.0, 0.7, 0.8, 0.2, 0.6, 0.4, 0.05,
            0.85, 0.15, 0.35, 0.45, 0.55, 0.65, 0.75, 0.25]
    picks = select_samples(ious, seed=0)
    assert len(picks) == 16
    assert picks[:4] == [(3, 'best 1'), (1, 'best 2'), (12, 'best 3'),
                         (7, 'best 4')]
    assert picks[4:8] == [(5, 'worst 1'), (11, 'worst 2'), (2, 'worst 3'),
                          (13, 'worst 4')]
    rand = [i for i, label in picks[8:]]
    assert all(label == 'random' for _, label in picks[8:])
    extremes = {3, 1, 12, 7, 5, 11, 2, 13}
    assert len(set(rand)) == 8 and not set(rand) & extremes
    assert select_samples(ious, seed=0) == picks  # reproducible
    # fewer samples than asked: each once
    few = select_samples([0.2, 0.9, 0.5], seed=1)
    assert few == [(1, 'best 1'), (2, 'best 2'), (0, 'best 3')]
    with pytest.raises(ValueError, match='num_random'):
        select_samples(ious, num_random=-1)


def make_records(tmp_path, n=20, size=(60, 80)):
    """n samples; sample i is a solid colour image, prediction a fixed
    square, ground truth shifted by i pixels (IoU falls with i)."""
    h, w = size
    records = []
    for i in range(n):
        color = (10 + 12 * i, 240 - 11 * i, (37 * i) % 200 + 20)
        img = np.empty((h, w, 3), np.uint8)
        img[...] = color
        path = str(tmp_path / f'img{i}.png')
        cv2.imwrite(path, img[..., ::-1])
        pred = rect(h, w, 10, 40, 10, 40)
        gt = rect(h, w, 10, 40, 10 + i, 40 + i)
        ds = sample(pred, gt, text=f'shape number {i}', img_path=path,
                    ref_id=i, sent_id=100 + i, ori_shape=(h, w),
                    img_shape=(h, w))
        records.append(record_of(ds))
    return records


def test_records_round_trip_and_iou(tmp_path):
    rec = make_records(tmp_path, n=4)[3]
    # square 30 x 30 shifted by 3: I = 30 * 27, U = 2 * 900 - 810
    assert rec['iou'] == pytest.approx(810 / 990)
    ds = sample_of(rec)
    assert ds.text == 'shape number 3' and ds.ref_id == 3
    square = rect(60, 80, 10, 40, 10, 40)
    assert (ds.pred_sem_seg.data[0].numpy() == square).all()
    with pytest.raises(ValueError, match=r'x.jpg.*ref 5'):
        record_of(sample(rect(4, 4, 0, 1, 0, 1), img_path='x.jpg',
                         ref_id=5))


def test_sheet_holds_the_chosen_tiles(tmp_path):
    records = make_records(tmp_path)
    out = str(tmp_path / 'sheet' / 'contact_sheet.png')
    placements = write_contact_sheet(records, out, tile_width=160, gap=6)
    sheet = cv2.imread(out)[..., ::-1].astype(int)
    assert len(placements) == 16
    assert sheet.shape[1] == 4 * (160 + 6) + 6
    # best tiles are the smallest shifts, worst the largest
    assert [p['index'] for p in placements[:4]] == [0, 1, 2, 3]
    assert [p['index'] for p in placements[4:8]] == [19, 18, 17, 16]
    chosen = {p['index'] for p in placements}
    # each tile shows its own image (its top-left corner is image
    # background), and the 4 left-out samples appear nowhere
    for p in placements:
        x0, y0, x1, y1 = p['box']
        rec_color = cv2.imread(records[p['index']]['img_path'])[0, 0, ::-1]
        assert np.abs(sheet[y0 + 3, x0 + 3] - rec_color).max() <= 2
        assert (x1 - x0) == 160 and y1 - y0 > 160 * 60 / 80  # + caption
    for i in set(range(20)) - chosen:
        color = cv2.imread(records[i]['img_path'])[0, 0, ::-1]
        assert not (np.abs(sheet - color).max(-1) <= 1).any()
    # tiles are placed in 4 columns, rows in reading order
    xs = [p['box'][0] for p in placements]
    assert xs[:4] == [6, 172, 338, 504] and xs[4:8] == xs[:4]
    # the background between tiles is white
    assert (sheet[:6] == 255).all()


def test_empty_records_is_an_error():
    with pytest.raises(ValueError, match='no predictions'):
        contact_sheet([])


def test_collect_predictions_in_the_test_loop(refshapes_root, tmp_path):
    cfg = tiny_cfg(refshapes_root, str(tmp_path / 'work'))
    cfg.visualizer.name = str(tmp_path)
    records = collect_predictions(cfg)  # random weights
    assert len(records) == 8
    assert len({(r['ref_id'], r['sent_id']) for r in records}) == 8
    # the mean of the per-sample IoUs is the metric's mIoU
    metrics = [line for line in open(
        next((tmp_path / 'work').rglob('*.log'))) if 'RefSegMetric' in line]
    miou = float(metrics[-1].split('mIoU: ')[1].split()[0])
    assert 100 * np.mean([r['iou'] for r in records]) == pytest.approx(
        miou, abs=0.01)
    sheet, placements = contact_sheet(records, tile_width=100)
    assert len(placements) == 8 and sheet.shape[1] == 4 * 106 + 6
