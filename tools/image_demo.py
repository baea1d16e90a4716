"""Segment what each sentence refers to in one image and write overlays.

Usage::

    python tools/image_demo.py IMAGE CONFIG CHECKPOINT --text "the man on
        the left" [--text ...] [--out-file out.png] [--device cpu]
    mim run ris_plugins image_demo IMAGE CONFIG CHECKPOINT --text ...

CONFIG is a path or a config name (e.g.
``ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160``, looked up in the
clone's ``configs/`` or the installed package's ``.mim/configs``).
For each sentence it prints the mask area in pixels and in percent of the
image, and writes the overlay (mask, contour, sentence) to ``--out-file``
(default ``<image stem>_overlay.png``); with several sentences the files
are ``<out stem>_<k><ext>``, k = 0, 1, ... A missing or unreadable image,
an empty sentence, an unknown config or a checkpoint that does not fit the
config is reported on stderr with exit status 2.
"""
import argparse
import os.path as osp
import sys
from typing import List, Optional

import mmcv


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Referring segmentation of one image, one or more '
        'sentences')
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='config file or config name')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--text', action='append', required=True,
        help='the referring sentence; repeat for several (the image is '
        'encoded once when the backbone does not read the text)')
    parser.add_argument(
        '--out-file', default=None,
        help='overlay file (default: <image stem>_overlay.png)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu, cuda:0')
    parser.add_argument('--batch-size', type=int, default=8,
                        help='sentences per forward')
    return parser.parse_args(argv)


def out_files(image: str, out_file: Optional[str], n: int) -> List[str]:
    """Overlay paths: ``out_file`` for one sentence, else
    ``<stem>_<k><ext>``."""
    out_file = out_file or (osp.splitext(osp.basename(image))[0] +
                            '_overlay.png')
    if n == 1:
        return [out_file]
    stem, ext = osp.splitext(out_file)
    return [f'{stem}_{k}{ext or ".png"}' for k in range(n)]


def main(argv: Optional[List[str]] = None) -> int:
    """Run the demo; returns the exit status (0, or 2 on bad input)."""
    args = parse_args(argv)
    from ris_plugins.apis import RefSegInferencer
    try:
        inferencer = RefSegInferencer(args.config, weights=args.checkpoint,
                                      device=args.device)
        result = inferencer(args.image, args.text, return_vis=True,
                            batch_size=args.batch_size)
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    files = out_files(args.image, args.out_file, len(args.text))
    for pred, vis, path in zip(result['predictions'],
                               result['visualization'], files):
        area = int(pred['mask'].sum())
        percent = 100.0 * area / pred['mask'].size
        if not mmcv.imwrite(mmcv.rgb2bgr(vis), path):
            print(f'error: could not write {path!r}', file=sys.stderr)
            return 2
        print(f'{pred["text"]!r}: mask {area} pixels ({percent:.2f}% of '
              f'{pred["mask"].shape[1]}x{pred["mask"].shape[0]}); '
              f'overlay {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
