"""Per-layer quantization sensitivity of a trained RIS model.

Calibrates the model with a quantization method and bit setting, then
turns on one layer's quantizers at a time and measures how far the
model's logits move from FP on the calibration samples
(:func:`ris_plugins.quantization.sensitivity.layer_errors`):
``rel_err = ||y_q - y_fp||^2 / ||y_fp||^2``.  Writes a Markdown table
(sorted, worst first) and a bar plot; the worst layers are the ones to
keep at 8 bits or FP with a ``rules`` entry when W4A4 falls apart.

With ``--size-ratios``, also the accuracy-vs-size curve of mixed
precision (``quant_cfg.budget``, :mod:`ris_plugins.quantization.
mixed_precision`): FP, pure W4A4, pure W8A8 and one mixed model per
budget ``size_ratio`` (quantized weight bytes relative to pure 4-bit
weights), evaluated on ``--val-samples`` val samples.  The low (W4A4) and
high (W8A8) models are calibrated once; each mixed model takes its
promoted layers' parameters from the W8A8 calibration and the others from
the W4A4 one, which equals calibrating it (parameters are per layer, from
FP inputs; see ``calibrate_with_budget``).  Writes ``budget_curve.md`` /
``.json``; ``--onnx`` also exports each model's QDQ ONNX file
(4-bit weights stored as INT4, the word-embedding table kept float as in
the size count) and reports its size.

Example::

    python tools/analysis_tools/ptq_sensitivity.py \\
        configs/demo/lavt-small_swin-32-minilm_1xb16-1500i_refshapes-160x160.py \\
        work_dirs/demo_lavt2/iter_1500.pth --bits w4a4 --out work_dirs/sens \\
        --samples 32 --size-ratios 1.1 1.3 1.6 --val-samples 300
"""
import copy
import json
import argparse
import os
import time
import os.path as osp

import matplotlib
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from ptq_accuracy import calib_dataset, evaluate, method_hook
from ris_plugins.quantization import (calibrate_on_dataset, layer_errors,
                                      load_quant_params, quant_state_dict,
                                      quantize_model, tensor_outputs)
from ris_plugins.quantization.mixed_precision import (assign_bits,
                                                      assigned_quant_cfg,
                                                      float_bytes,
                                                      mixed_params,
                                                      weight_sizes)
from ris_plugins.quantization.sensitivity import errors_by_layer
from ris_plugins.quantization.calibrate import calibration_indices
from ris_plugins.quantization.settings import parse_bits
from ris_plugins.evaluation import build_val_subset

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402


def budget_curve(cfg, fp, quant_cfg, low, rows, dataset, args) -> list:
    """FP, W4A4 (``low``: (model, state)), W8A8 and one mixed model per
    ``--size-ratios`` entry: mIoU / oIoU on the val samples and sizes."""
    loader, evaluator = build_val_subset(cfg, args.val_samples, batch_size=8)
    w_bits = quant_cfg['w_bits']
    high_cfg = dict(quant_cfg, w_bits=8, a_bits=8)
    high = copy.deepcopy(fp)
    high_state = quantize_model(high, high_cfg)
    tick = time.perf_counter()
    calibrate_on_dataset(high_state, high, dataset, args.samples,
                         search=args.search)
    print(f'W8A8 calibration {time.perf_counter() - tick:.0f} s', flush=True)
    low_model, low_state = low
    sizes = weight_sizes(low_state)
    extra = float_bytes(low_model, low_state)
    errors = errors_by_layer(rows)
    out = [dict(setting='FP', **evaluate(fp, loader, evaluator))]
    points = [('W4A4', 1.0, low_model, low_state),
              ('W8A8', 8 / w_bits, high, high_state)]
    for ratio in args.size_ratios:
        done = assign_bits(errors, sizes, dict(size_ratio=ratio), w_bits)
        model = copy.deepcopy(fp)
        state = quantize_model(model, assigned_quant_cfg(
            quant_cfg, done.high_layers, done.high_bits))
        load_quant_params(state, mixed_params(
            state, quant_state_dict(low_state), quant_state_dict(high_state),
            done.high_layers), 'mixed parameters')
        print(done.summary(), flush=True)
        points.append((f'budget size_ratio={ratio}', ratio, model, state))
    for name, _, model, state in points:
        ws = weight_sizes(state)
        wbytes = sum(n * b for n, b in ws.values()) / 8
        row = dict(setting=name,
                   layers_8bit=sum(b == 8 for _, b in ws.values()),
                   weight_mib=wbytes / 2**20,
                   size_ratio=wbytes / (sum(n for n, _ in ws.values()) *
                                        w_bits / 8),
                   avg_w_bits=8 * wbytes / sum(n for n, _ in ws.values()),
                   total_mib=(wbytes + extra) / 2**20)
        if args.onnx:
            row['onnx_mib'] = onnx_size(cfg, model, state, args, name)
        row.update(evaluate(model, loader, evaluator))
        out.append(row)
        print(row, flush=True)
    return out


def onnx_size(cfg, model, state, args, name) -> float:
    """MiB of the model's QDQ ONNX file (4-bit weights as INT4)."""
    from ris_plugins.deploy.qdq import export_qdq
    from ris_plugins.utils.synthetic import synthetic_inputs
    path = osp.join(args.out, name.replace(' ', '_').replace('=', '') +
                    '.onnx')
    try:
        # embedding='float': the file holds the float part as counted
        export_qdq(model, state, synthetic_inputs(cfg, 1)[0], path, [],
                   output_qdq=False, embedding='float')
    except Exception as err:  # reported, the curve goes on
        print(f'ONNX export of {name} failed: {err!r}', flush=True)
        return float('nan')
    return osp.getsize(path) / 2**20


def curve_markdown(rows: list, title: str) -> str:
    lines = [f'# Accuracy vs size: {title}', '',
             '| setting | layers at W8A8 | quantized weights (MiB) | '
             'x pure W4 | avg w bits | model (MiB) | ONNX file (MiB) | '
             'mIoU | oIoU |', '|---|---|---|---|---|---|---|---|---|']
    for r in rows:
        if r['setting'] == 'FP':
            lines.append(f"| FP | - | - | - | 32 | - | - | {r['mIoU']:.2f} "
                         f"| {r['oIoU']:.2f} |")
            continue
        onnx = f"{r['onnx_mib']:.2f}" if 'onnx_mib' in r else '-'
        lines.append(
            f"| {r['setting']} | {r['layers_8bit']} | {r['weight_mib']:.3f}"
            f" | {r['size_ratio']:.3f} | {r['avg_w_bits']:.2f} | "
            f"{r['total_mib']:.2f} | {onnx} | {r['mIoU']:.2f} | "
            f"{r['oIoU']:.2f} |")
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--method', default='ptq4ris')
    parser.add_argument('--bits', default='w4a4')
    parser.add_argument('--samples', type=int, default=8,
                        help='calibration samples also used for scoring')
    parser.add_argument('--out', default='work_dirs/ptq_sensitivity')
    parser.add_argument('--size-ratios', type=float, nargs='*', default=[],
                        help='mixed-precision budgets (size_ratio) for the '
                        'accuracy-vs-size curve')
    parser.add_argument('--val-samples', type=int, default=300)
    parser.add_argument('--onnx', action='store_true',
                        help='also export each curve point as QDQ ONNX')
    args = parser.parse_args()
    register_all_modules()
    cfg = Config.fromfile(args.config)
    fp = MODELS.build(cfg.model).eval()
    load_checkpoint(fp, args.checkpoint, map_location='cpu')
    model = copy.deepcopy(fp)
    hook = method_hook(args.method)
    args.search = hook.get('search')
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
    if args.size_ratios:
        curve = budget_curve(cfg, fp, quant_cfg, (model, state), rows,
                             dataset, args)
        with open(osp.join(args.out, 'budget_curve.json'), 'w') as f:
            json.dump(curve, f, indent=1)
        md = curve_markdown(curve, title)
        with open(osp.join(args.out, 'budget_curve.md'), 'w') as f:
            f.write(md + '\n')
        print(md)


if __name__ == '__main__':
    main()
