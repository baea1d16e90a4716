"""Do ``RefSegInferencer`` and ``mim test`` agree? Both on the same samples.

Takes the first ``--num`` samples of a split (default: 200 of val) and
evaluates them twice with the config's test evaluator (oIoU, mIoU, Pr@X):

* **test loop**: mmengine's ``Runner.test()`` on the config's test
  dataloader restricted to those samples, which is what ``mim test`` runs;
* **inferencer**: :class:`ris_plugins.apis.RefSegInferencer` called on each
  sample's image file and sentence, as a user calls it, its mask (or
  probability map, for evaluators with a ``threshold``) scored against the
  same ground truth at the image's original size.

It prints both rows, the largest metric difference and the fraction of
samples whose inferencer mask has IoU >= 0.5 (the README's demo check).
The checkpoint may be an ``.onnx`` file for the inferencer row (the test
loop row then needs ``--test-checkpoint`` with the PyTorch weights).

Example::

    python tools/analysis_tools/inferencer_vs_test.py \\
        configs/demo/ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py \\
        work_dirs/demo/iter_2000.pth --num 200
"""
import argparse
import copy
import json
import tempfile
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmengine.structures import PixelData

from mmseg.registry import DATASETS, METRICS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules


def positive(value: str) -> int:
    """argparse type: an integer >= 1."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(
            f'--num must be an integer >= 1, got {value!r}')
    return int(value)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='RefSegmentor config file')
    parser.add_argument('checkpoint', help='weights (.pth or .onnx)')
    parser.add_argument('--test-checkpoint', default=None,
                        help='PyTorch weights for the test loop (default: '
                        'CHECKPOINT)')
    parser.add_argument('--num', type=positive, default=200,
                        help='first N samples of the split (default 200)')
    parser.add_argument('--split', default='val')
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--out', default=None, help='also write JSON here')
    return parser.parse_args(argv)


def test_cfg_for(cfg: Config, args: argparse.Namespace) -> Config:
    """The config's val dataloader on ``--split``, first ``--num`` samples,
    as the test dataloader (no workers)."""
    cfg = copy.deepcopy(cfg)
    loader = copy.deepcopy(cfg.val_dataloader)
    loader.dataset.split = args.split
    loader.dataset.indices = args.num
    if args.data_root:
        loader.dataset.data_root = args.data_root
    loader.num_workers = 0
    loader.persistent_workers = False
    cfg.test_dataloader = loader
    return cfg


def test_loop_metrics(cfg: Config, checkpoint: str) -> Dict[str, float]:
    """What ``mim test`` reports for ``cfg``'s test dataloader."""
    cfg = copy.deepcopy(cfg)
    cfg.load_from = checkpoint
    cfg.work_dir = tempfile.mkdtemp(prefix='inferencer_vs_test_')
    return Runner.from_cfg(cfg).test()


def inferencer_metrics(cfg: Config, checkpoint: str) -> tuple:
    """The test evaluator's metrics of RefSegInferencer's masks, and the
    per-sample IoUs."""
    from ris_plugins.apis import RefSegInferencer
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    inferencer = RefSegInferencer(model=cfg, weights=checkpoint)
    metric = METRICS.build(cfg.test_evaluator)
    ious = []
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        gt = sample.gt_sem_seg.data  # (1, H, W) at the original size
        pred = inferencer(sample.img_path, sample.text)['predictions'][0]
        mask = torch.from_numpy(pred['mask']).long()[None]  # (1, H, W)
        ds = SegDataSample(metainfo=sample.metainfo)
        ds.gt_sem_seg = PixelData(data=gt)
        ds.pred_sem_seg = PixelData(data=mask)
        ds.seg_logits = PixelData(data=torch.from_numpy(pred['prob'])[None])
        metric.process({}, [ds.to_dict()])
        inter = int(((mask == 1) & (gt == 1)).sum())
        union = int(((mask == 1) | (gt == 1)).sum())
        ious.append(inter / union if union else 0.0)
    return metric.evaluate(len(dataset)), np.array(ious)


def main(argv: Optional[List[str]] = None) -> dict:
    args = parse_args(argv)
    register_all_modules()
    cfg = test_cfg_for(Config.fromfile(args.config), args)
    loop = test_loop_metrics(cfg, args.test_checkpoint or args.checkpoint)
    inf, ious = inferencer_metrics(cfg, args.checkpoint)
    keys = [k for k in loop if k in inf]
    diff = max(abs(loop[k] - inf[k]) for k in keys)
    print(f'\n{args.num} {args.split} samples of {args.config}')
    print('| evaluated by | ' + ' | '.join(keys) + ' |')
    print('|---' * (len(keys) + 1) + '|')
    for name, m in (('Runner.test() (mim test)', loop),
                    ('RefSegInferencer', inf)):
        print(f'| {name} | ' + ' | '.join(f'{m[k]:.2f}' for k in keys) +
              ' |')
    frac = float((ious >= 0.5).mean())
    print(f'largest metric difference: {diff:.4f} points; inferencer masks '
          f'with IoU >= 0.5: {100 * frac:.1f}% ({int((ious >= 0.5).sum())}'
          f' of {len(ious)})')
    result = dict(test_loop=loop, inferencer=inf, max_diff=diff,
                  iou_ge_0_5=frac, num=len(ious))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == '__main__':
    main()
