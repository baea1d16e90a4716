"""Compare the test data pipelines of two configs sample by sample.

Runs both configs' ``test_dataloader`` pipelines (without the final
``PackSegInputs``) on the same samples and reports how much the ground-truth
masks, the images and the token sequences differ. Used to measure our LAVT
data pipeline against LAVT's own (PIL resize, ids cut at ``[:20]``)::

    python tools/analysis_tools/compare_data_pipelines.py \\
        configs/lavt/lavt_swin-b_8xb4-40e_refcoco-480x480.py \\
        configs/lavt/lavt-upstream-data_swin-b_8xb4-40e_refcoco-480x480.py \\
        --cfg-options test_dataloader.dataset.data_root=data/refshapes \\
            test_dataloader.dataset.dataset=refshapes \\
            test_dataloader.dataset.split=val
"""
import argparse
import json
from typing import Dict, List

import numpy as np
from mmengine.config import Config, DictAction
from mmseg.registry import DATASETS
from mmseg.utils import register_all_modules

import ris_plugins  # noqa: F401


def build_dataset(path: str, options: dict):
    """The config's test dataset with ``options`` merged and the final
    ``PackSegInputs`` dropped (so arrays stay numpy)."""
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    ds_cfg = cfg.test_dataloader.dataset
    ds_cfg.pipeline = [t for t in ds_cfg.pipeline
                       if t.type != 'PackSegInputs']
    return DATASETS.build(ds_cfg)


def compare(a, b, limit: int = None) -> Dict[str, float]:
    """Sample-by-sample differences between datasets ``a`` and ``b`` (the
    same samples, different pipelines).

    Returns:
        dict: ``samples``; ``mask_pixels`` (total) and
        ``mask_pixels_differ`` (count and fraction); ``samples_mask_differ``;
        ``img_mean_abs_diff`` (0-255 scale, over all pixels and channels);
        ``token_sequences_differ`` (count and fraction).

    Raises:
        ValueError: The datasets differ in length or sample order, or a
            pipeline output has a different mask / image shape.
    """
    if len(a) != len(b):
        raise ValueError(f'datasets differ in length: {len(a)} vs {len(b)}')
    n = len(a) if limit is None else min(limit, len(a))
    px = px_diff = mask_diff = tok_diff = 0
    img_abs: List[float] = []
    for i in range(n):
        x, y = a[i], b[i]
        if (x['ref_id'], x.get('sent_id')) != (y['ref_id'], y.get('sent_id')):
            raise ValueError(f'sample {i} differs: ref {x["ref_id"]} vs '
                             f'{y["ref_id"]}')
        for key in ('gt_seg_map', 'img'):
            if x[key].shape != y[key].shape:
                raise ValueError(f'sample {i}: {key} shapes differ: '
                                 f'{x[key].shape} vs {y[key].shape}')
        d = int((x['gt_seg_map'] != y['gt_seg_map']).sum())
        px += x['gt_seg_map'].size
        px_diff += d
        mask_diff += d > 0
        img_abs.append(float(np.abs(x['img'].astype(np.float64) -
                                    y['img'].astype(np.float64)).mean()))
        tok_diff += not np.array_equal(x['text_tokens'], y['text_tokens'])
    return dict(
        samples=n,
        mask_pixels=px,
        mask_pixels_differ=px_diff,
        mask_pixels_differ_frac=px_diff / px,
        samples_mask_differ=mask_diff,
        img_mean_abs_diff=float(np.mean(img_abs)),
        token_sequences_differ=tok_diff,
        token_sequences_differ_frac=tok_diff / n)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config_a')
    parser.add_argument('config_b')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default={}, help='merged into both configs')
    parser.add_argument('--limit', type=int, default=None,
                        help='compare only the first N samples')
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    register_all_modules(init_default_scope=True)
    a = build_dataset(args.config_a, args.cfg_options)
    b = build_dataset(args.config_b, args.cfg_options)
    print(json.dumps(compare(a, b, args.limit), indent=2))


if __name__ == '__main__':
    main()
