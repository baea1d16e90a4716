"""Per-layer quantization sensitivity of a trained RIS model.

Calibrates the model with a quantization method and bit setting, then
turns on one layer's quantizers at a time and measures how far the
model's logits move from FP on the calibration samples
(:func:`ris_plugins.quantization.sensitivity.layer_errors`):
``rel_err = ||y_q - y_fp||^2 / ||y_fp||^2``.  Writes a Markdown table
(sorted, worst first) and a bar plot; the worst layers are the ones to
keep at 8 bits or FP with a ``rules`` entry when W4A4 falls apart.

Example::

    python tools/analysis_tools/ptq_sensitivity.py \\
        configs/demo/lavt-small_swin-32-minilm_1xb16-1500i_refshapes-160x160.py \\
        work_dirs/demo_lavt2/iter_1500.pth --bits w4a4 --out work_dirs/sens
"""
import argparse
import os
import os.path as osp

import matplotlib
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from ptq_accuracy import calib_dataset, method_hook
from ris_plugins.quantization import (calibrate_on_dataset, layer_errors,
                                      quantize_model, tensor_outputs)
from ris_plugins.quantization.calibrate import calibration_indices
from ris_plugins.quantization.settings import parse_bits

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--method', default='ptq4ris')
    parser.add_argument('--bits', default='w4a4')
    parser.add_argument('--samples', type=int, default=8,
                        help='calibration samples also used for scoring')
    parser.add_argument('--out', default='work_dirs/ptq_sensitivity')
    args = parser.parse_args()
    register_all_modules()
    cfg = Config.fromfile(args.config)
    model = MODELS.build(cfg.model).eval()
    load_checkpoint(model, args.checkpoint, map_location='cpu')
    hook = method_hook(args.method)
    quant_cfg = dict(hook['quant_cfg'], **parse_bits(args.bits))
    state = quantize_model(model, quant_cfg)
    dataset = calib_dataset(cfg)
    calibrate_on_dataset(state, model, dataset, args.samples,
                         search=hook.get('search'))
    batches = [model.data_preprocessor(pseudo_collate([dataset[i]]), False)
               for i in calibration_indices(len(dataset), args.samples)]
    rows = layer_errors(state, tensor_outputs(model, batches))
    os.makedirs(args.out, exist_ok=True)
    title = f'{osp.basename(args.config)} {args.method} {args.bits.upper()}'
    with open(osp.join(args.out, 'sensitivity.md'), 'w') as f:
        f.write(f'# Per-layer sensitivity: {title}\n\n'
                '| layer | quantizers | rel. logit error |\n|---|---|---|\n')
        f.writelines(f'| {n} | {k} | {e:.3e} |\n' for n, k, e in rows)
    top = rows[:30][::-1]
    plt.figure(figsize=(9, 0.3 * len(top) + 1.5))
    plt.barh([r[0] for r in top], [r[2] for r in top])
    plt.xscale('log')
    plt.xlabel('||y_q - y_fp||^2 / ||y_fp||^2 (one layer quantized)')
    plt.title(title, fontsize=9)
    plt.tight_layout()
    plt.savefig(osp.join(args.out, 'sensitivity.png'), dpi=100)
    for n, k, e in rows[:10]:
        print(f'{e:.3e}  {n}  ({k})')
    print(f'wrote {args.out}/sensitivity.md and sensitivity.png')


if __name__ == '__main__':
    main()
