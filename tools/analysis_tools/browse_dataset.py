"""Draw dataset samples after the data pipeline: the image, the referred
(ground-truth) mask as an overlay with its contour, and the sentence, to
check a dataset conversion or a pipeline (flips, resizing, tokenized text
source).

Pictures are named ``<image stem>_<ref_id>_<sent_id>.png`` as
``tools/test.py --show-dir`` names them.

Usage::

    python tools/analysis_tools/browse_dataset.py CONFIG
        [--split train|val|test] [--output-dir DIR] [--num N] [--show]
        [--cfg-options KEY=VALUE ...]
"""
import argparse
import os
import os.path as osp
import time
from typing import List, Optional

import numpy as np
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

SPLITS = ('train', 'val', 'test')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='config file')
    parser.add_argument('--split', default='train', choices=SPLITS,
                        help='which dataloader\'s dataset to draw')
    parser.add_argument(
        '--output-dir', default=None,
        help='where the pictures go (default: work_dirs/browse_dataset/'
        '<config name>_<split>)')
    parser.add_argument('--num', type=int, default=20,
                        help='number of samples to draw, from the first')
    parser.add_argument('--show', action='store_true',
                        help='display each picture instead of writing it')
    parser.add_argument('--show-interval', type=float, default=2,
                        help='seconds each picture is displayed')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    return parser.parse_args(argv)


def browse(cfg: Config, split: str, output_dir: Optional[str], num: int,
           show: bool = False, wait_time: float = 2) -> List[str]:
    """Draw the first ``num`` samples of ``cfg``'s ``<split>_dataloader``
    dataset after its pipeline.

    Args:
        cfg (Config): Config with ``<split>_dataloader.dataset``.
        split (str): ``'train'``, ``'val'`` or ``'test'``.
        output_dir (str, optional): Folder of the PNGs (None with
            ``show``: nothing is written).
        num (int): How many samples (>= 1; at most the dataset's length).
        show (bool): Display each picture.
        wait_time (float): Display time in seconds.

    Returns:
        list[str]: Written files (empty with ``show`` and no folder).

    Raises:
        KeyError: The config has no ``<split>_dataloader.dataset``.
        ValueError: ``num`` < 1, or two samples with the same picture
            name.
    """
    from mmseg.registry import DATASETS, VISUALIZERS
    from ris_plugins.engine.hooks.ref_visualization_hook import \
        picture_name
    if num < 1:
        raise ValueError(f'--num must be >= 1, got {num}')
    loader = cfg.get(f'{split}_dataloader')
    if not loader or 'dataset' not in loader:
        raise KeyError(f'the config has no {split}_dataloader.dataset; '
                       f'valid splits here: '
                       f'{[s for s in SPLITS if cfg.get(s + "_dataloader")]}')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    dataset = DATASETS.build(loader.dataset)
    vis_cfg = dict(cfg.get('visualizer', dict(type='RefSegLocalVisualizer')))
    vis_cfg.update(name=f'browse_dataset_{time.time()}', vis_backends=None,
                   save_dir=None)
    visualizer = VISUALIZERS.build(vis_cfg)
    if output_dir is not None:
        os.makedirs(output_dir, exist_ok=True)
    written: dict = {}
    for i in range(min(num, len(dataset))):
        item = dataset[i]
        data_sample = item['data_samples']
        # (3, H, W) BGR tensor from PackSegInputs -> (H, W, 3) RGB
        image = np.ascontiguousarray(
            item['inputs'].permute(1, 2, 0).numpy()[..., ::-1])
        name = picture_name(data_sample)
        out_file = None
        if output_dir is not None:
            out_file = osp.join(output_dir, name + '.png')
            if out_file in written:
                raise ValueError(
                    f'samples {written[out_file]} and {i} would both be '
                    f'drawn to {out_file!r} (same image, ref_id, sent_id)')
            written[out_file] = i
        visualizer.add_datasample(
            name, image, data_sample, draw_pred=False, show=show,
            wait_time=wait_time, out_file=out_file)
    return list(written)


def main(argv: Optional[List[str]] = None) -> List[str]:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    output_dir = args.output_dir
    if output_dir is None and not args.show:
        stem = osp.splitext(osp.basename(args.config))[0]
        output_dir = osp.join('work_dirs', 'browse_dataset',
                              f'{stem}_{args.split}')
    files = browse(cfg, args.split, output_dir, args.num, args.show,
                   args.show_interval)
    if files:
        print(f'{len(files)} pictures of the {args.split} split written to '
              f'{output_dir}')
    return files


if __name__ == '__main__':
    main()
