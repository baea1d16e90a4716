"""Accuracy of post-training quantization on trained RIS models.

For each model (an FP config + checkpoint), evaluates on a split the FP
model and every (bit setting x method) with the shipped quantization
bases, plus the PTQ4RIS ablation (DRQ only, RORQ only, both) and the
faithful reference mode, and writes a JSON file and a Markdown table.

Example (the three RefShapes demo models)::

    python tools/analysis_tools/ptq_accuracy.py \\
        --model baseline configs/demo/ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py work_dirs/demo/iter_2000.pth \\
        --out work_dirs/ptq_accuracy
"""
import argparse
import copy
import json
import os
import os.path as osp
import time

import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmseg.registry import DATASETS, MODELS
from mmseg.utils import register_all_modules

import ris_plugins  # noqa: F401
from ris_plugins.quantization import calibrate_on_dataset, quantize_model
from ris_plugins.quantization.settings import parse_bits
from ris_plugins.evaluation import build_val_subset

QUANT = osp.join(osp.dirname(__file__), '..', '..', 'configs', '_base_',
                 'quantization')
BITS = ('w8a8', 'w6a6', 'w4a8', 'w4a4')
METHODS = ('minmax', 'percentile', 'omse', 'ptq4ris')


def method_hook(method: str) -> dict:
    """The PTQ settings (``ptq``) of a method base, with the ablations built by
    dropping the DRQ or the RORQ rules of ``ptq4ris``."""
    name = {'drq-only': 'ptq4ris', 'rorq-only': 'ptq4ris'}.get(method, method)
    cfg = Config.fromfile(osp.join(QUANT, f'{name}.py'))
    hook = copy.deepcopy(cfg.ptq.to_dict())
    drop = {'drq-only': cfg.get('rorq_rules'),
            'rorq-only': cfg.get('drq_rules')}.get(method)
    if drop:
        hook['quant_cfg']['rules'] = [
            r for r in hook['quant_cfg']['rules'] if r not in drop]
    return hook


def evaluate(model, loader, evaluator) -> dict:
    model.eval()
    with torch.no_grad():
        for batch in loader:
            evaluator.process(model.test_step(batch), batch)
    return evaluator.evaluate(len(loader.dataset))


def calib_dataset(cfg: Config):
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    ds_cfg.pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    ds_cfg.sentence_mode = 'first'
    return DATASETS.build(ds_cfg)


def run_model(name, cfg_path, ckpt, args) -> list:
    cfg = Config.fromfile(cfg_path)
    if args.data_root:
        for key in ('train_dataloader', 'val_dataloader'):
            cfg[key].dataset.data_root = args.data_root
    loader, evaluator = build_val_subset(cfg, args.val_samples,
                                         batch_size=args.batch_size)
    fp = MODELS.build(cfg.model)
    load_checkpoint(fp, ckpt, map_location='cpu')
    calib = calib_dataset(cfg)
    rows = [dict(model=name, bits='FP', method='-',
                 **evaluate(fp, loader, evaluator), calib_s=0.0)]
    print(rows[-1], flush=True)
    settings = [(b, m) for b in args.bits for m in args.methods]
    settings += [('w4a4', m) for m in args.ablation]
    for bits, method in settings:
        hook = method_hook(method)
        quant_cfg = dict(hook['quant_cfg'], **parse_bits(bits))
        model = copy.deepcopy(fp)
        state = quantize_model(model, quant_cfg)
        times = calibrate_on_dataset(state, model, calib,
                                     hook.get('calibrate_steps', 32),
                                     search=hook.get('search'))
        rows.append(dict(model=name, bits=bits.upper(), method=method,
                         **evaluate(model, loader, evaluator),
                         calib_s=round(times['total'], 1)))
        print(rows[-1], flush=True)
    return rows


def markdown(rows: list) -> str:
    lines = ['| model | bits | method | mIoU | oIoU | calib (s) |',
             '|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['model']} | {r['bits']} | {r['method']} | "
                     f"{r['mIoU']:.2f} | {r['oIoU']:.2f} | {r['calib_s']} |")
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--model', nargs=3, action='append', required=True,
                        metavar=('NAME', 'CONFIG', 'CHECKPOINT'))
    parser.add_argument('--bits', nargs='+', default=list(BITS))
    parser.add_argument('--methods', nargs='+', default=list(METHODS))
    parser.add_argument('--ablation', nargs='*',
                        default=['drq-only', 'rorq-only', 'ptq4ris_faithful'])
    parser.add_argument('--val-samples', type=int, default=None,
                        help='evaluate on the first N samples of the split')
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--data-root', default=None)
    parser.add_argument('--out', default='work_dirs/ptq_accuracy')
    args = parser.parse_args()
    register_all_modules()
    os.makedirs(args.out, exist_ok=True)
    rows, start = [], time.time()
    for name, cfg_path, ckpt in args.model:
        rows += run_model(name, cfg_path, ckpt, args)
        with open(osp.join(args.out, 'ptq_accuracy.json'), 'w') as f:
            json.dump(rows, f, indent=1)
        with open(osp.join(args.out, 'ptq_accuracy.md'), 'w') as f:
            f.write(markdown(rows) + '\n')
    print(markdown(rows))
    print(f'total {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
