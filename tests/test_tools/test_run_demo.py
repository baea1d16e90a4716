"""tools/run_demo.py ends with a contact sheet of val predictions; here on
a tiny config with random weights (no training)."""
import os.path as osp

import cv2
import numpy as np
from mmengine.runner import Runner, save_checkpoint

from ..conftest import load_tool, tiny_cfg


def test_contact_sheet_step(refshapes_root, tmp_path, capsys):
    run_demo = load_tool('run_demo.py')
    work = str(tmp_path / 'work')
    cfg = tiny_cfg(refshapes_root, work)
    cfg.visualizer.name = str(tmp_path)
    cfg_path = str(tmp_path / 'tiny.py')
    cfg.dump(cfg_path)
    runner = Runner.from_cfg(cfg)
    save_checkpoint({'state_dict': runner.model.state_dict()},
                    str(tmp_path / 'random.pth'))
    out = run_demo.write_demo_contact_sheet(
        cfg_path, str(tmp_path / 'random.pth'), work, refshapes_root)
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
