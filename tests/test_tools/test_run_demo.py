"""tools/run_demo.py ends with a contact sheet of val predictions picked
from the per-sample val results; here on a tiny config with random weights
(no training)."""
import json
import os.path as osp

import cv2
import numpy as np
import pytest
from mmengine.runner import Runner, save_checkpoint

from ..conftest import load_tool, tiny_cfg


def test_contact_sheet_step(refshapes_root, tmp_path, capsys):
    run_demo = load_tool('run_demo.py')
    work = str(tmp_path / 'work')
    cfg = tiny_cfg(refshapes_root, work)
    cfg.visualizer.name = str(tmp_path)
    cfg_path = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_path)
    per_sample = str(tmp_path / 'val_samples.json')
    cfg.test_evaluator.per_sample_file = per_sample
    runner = Runner.from_cfg(cfg)
    save_checkpoint({'state_dict': runner.model.state_dict()},
                    str(tmp_path / 'random.pth'))
    metrics = runner.test()
    rows = json.load(open(per_sample))
    assert len(rows) == 8  # tiny_cfg tests 8 val samples
    assert run_demo.val_metrics(cfg_path, per_sample) == pytest.approx(
        metrics)
    out = run_demo.write_demo_contact_sheet(
        cfg_path, str(tmp_path / 'random.pth'), work, refshapes_root,
        per_sample)
    assert out == osp.join(work, 'contact_sheet.png')
    sheet = cv2.imread(out)
    # 8 val samples (tiny_cfg) -> 8 tiles of 240 px in 4 columns, 2 rows
    assert sheet.shape[1] == 4 * (240 + 6) + 6
    tiles = (sheet[:, 6:246] != 255).any(-1).any(-1)
    starts = np.flatnonzero(tiles[1:] & ~tiles[:-1]) + 1
    assert len(starts) == 2 and (sheet[:6] == 255).all()
    printed = capsys.readouterr().out
    assert printed.count(': IoU ') == 8 and 'best 1: IoU' in printed
    assert 'worst 4: IoU' in printed
    ious = sorted((r['iou'] for r in rows), reverse=True)
    assert f'best 1: IoU {100 * ious[0]:5.1f}%' in printed


def test_default_workers_leave_two_cores_to_compute():
    run_demo = load_tool('run_demo.py')
    assert [run_demo.default_workers(c) for c in (1, 2, 3, 4, 8, 64)] == [
        0, 0, 1, 2, 4, 4]


def test_unknown_sample_is_named(refshapes_root, tmp_path):
    run_demo = load_tool('run_demo.py')
    cfg = tiny_cfg(refshapes_root, str(tmp_path))
    with pytest.raises(KeyError, match=r'\(123456, 7\)'):
        run_demo.sample_indices(cfg.val_dataloader.dataset,
                                [dict(ref_id=123456, sent_id=7)])
