"""Export a RIS model to ONNX, FP32 or with calibrated quantizers as QDQ.

    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --out m.onnx
    python tools/deployment/pytorch2onnx.py CONFIG CHECKPOINT --out q.onnx \\
        --ptq-params work_dirs/<ptq run>/ptq_params.pth

The graph takes ``img`` (B, 3, H, W) float32 (normalised like the config's
data preprocessor), ``tokens`` (B, L) int64 and ``mask`` (B, L) int64 and
returns the raw head ``logits``; B is dynamic. The file is checked with
``onnx.checker`` and run once with ONNX Runtime against PyTorch on the same
inputs (the max abs difference is printed; against the fake-quantized
model for ``--ptq-params``). With ``--ptq-params`` (a file written by
``PTQHook`` / ``mim test`` of a quantization config) the quantization
config is read from the file, the checkpoint must be the one it was
calibrated for, and the output ranges of the integer layers are measured on
``--range-samples`` samples of the config's training split
(``ris_plugins.deploy.qdq``); the word-embedding tables are stored as int8
(int4 for <= 4-bit weights) unless ``--embedding float``
(``ris_plugins.deploy.embedding``).
"""
import argparse
import copy
import os.path as osp
import sys

import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from mmseg.registry import DATASETS, MODELS
from mmseg.utils import register_all_modules

import ris_plugins  # noqa: F401
from ris_plugins.deploy import export_onnx, max_abs_diff, ort_session
from ris_plugins.deploy.embedding import EMBEDDING_MODES
from ris_plugins.deploy.onnx_graph import kernel_counts
from ris_plugins.deploy.qdq import LOWERINGS, export_qdq
from ris_plugins.quantization import (file_sha256, load_quant_params,
                                      quantize_model, read_quant_params,
                                      resolved_quant_cfg)
from ris_plugins.utils.synthetic import synthetic_inputs


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--out', required=True, help='output .onnx file')
    p.add_argument('--ptq-params', default=None,
                   help='calibrated parameters (ptq_params.pth): export QDQ')
    p.add_argument('--shape', type=int, nargs=2, default=None,
                   metavar=('H', 'W'),
                   help='input size (default: the data preprocessor size)')
    # Measured on the three trained RefShapes demo models
    # (projects/ptq4ris/README.md, "Accuracy of the deployed files"): DRQ
    # and RORQ as plain 8-bit QDQ (and per-head attention operands on one
    # 8-bit grid) keep the deployed mIoU within 0.5 of the simulation and
    # put the text encoder, the MLPs and the attention products on integer
    # kernels; exact RORQ runs the text encoder in float, slower than FP32
    # ONNX.
    p.add_argument('--drq', choices=LOWERINGS, default='int8',
                   help='DRQ (twin-uniform) lowering (default: int8)')
    p.add_argument('--rorq', choices=LOWERINGS, default='int8',
                   help='RORQ (banded) lowering (default: int8)')
    p.add_argument('--heads', choices=LOWERINGS, default='int8',
                   help='attention operands quantized per head: int8 = one '
                   '8-bit grid over the heads (integer product), exact = '
                   'per-head QDQ (float product) (default: int8)')
    p.add_argument('--no-output-qdq', action='store_true',
                   help='no output requantization (layers then run float)')
    p.add_argument('--no-int4', action='store_true',
                   help='store <= 4-bit weights as int8')
    p.add_argument('--embedding', choices=EMBEDDING_MODES, default='auto',
                   help='word-embedding tables of a QDQ export: auto = '
                   'int4 for <= 4-bit weights (else int8), int8, int4, or '
                   'float (as the simulation)')
    p.add_argument('--range-samples', type=int, default=32)
    p.add_argument('--data-root', default=None)
    return p.parse_args(argv)


def range_inputs(cfg: Config, model, n: int, seed: int = 0) -> list:
    """``n`` (img, tokens, mask) from the training split (test pipeline,
    first sentence, seeded permutation), as ``PTQHook`` calibrates."""
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    ds_cfg.pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    ds_cfg.sentence_mode = 'first'
    dataset = DATASETS.build(ds_cfg)
    if len(dataset) < n:
        raise ValueError(f'--range-samples {n}: the training split has only '
                         f'{len(dataset)} samples')
    from mmengine.dataset import pseudo_collate
    idx = torch.randperm(len(dataset),
                         generator=torch.Generator().manual_seed(seed))[:n]
    out = []
    for i in idx.tolist():
        data = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
        out.append((data['inputs'].float(), data['tokens'],
                    data['text_mask']))
    return out


def load_quantized(model, params_path: str, checkpoint: str):
    """Quantize ``model`` with the quant_cfg recorded in ``params_path`` and
    load the parameters (every check of ``load_quant_params``).

    Raises:
        ValueError: not a parameter file, calibrated for another
            checkpoint, or parameters that do not fit, naming the file.
    """
    payload = read_quant_params(params_path)
    meta = payload['meta']
    if 'quant_cfg' not in meta:
        raise ValueError(f'{params_path} records no quant_cfg; it was not '
                         'written by PTQHook')
    digest = 'file:' + file_sha256(checkpoint)
    saved = meta.get('checkpoint_sha256')
    if saved is not None and saved != digest:
        raise ValueError(f'{params_path} was calibrated for '
                         f"{meta.get('checkpoint')} ({saved}), not for "
                         f'{checkpoint} ({digest}): recalibrate')
    # with a budget: the mixed-precision assignment recorded in the file
    state = quantize_model(model, resolved_quant_cfg(meta, params_path))
    load_quant_params(state, payload['state_dict'], params_path,
                      payload['bits'])
    return state


def main(argv=None) -> int:
    args = parse_args(argv)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.shape:
        cfg.model.data_preprocessor.size = tuple(args.shape)
    if args.data_root:
        cfg.train_dataloader.dataset.data_root = args.data_root
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu')
    model.eval()
    example = synthetic_inputs(cfg, 1)[0]
    if args.ptq_params:
        state = load_quantized(model, args.ptq_params, args.checkpoint)
        calib = ([] if args.no_output_qdq else
                 range_inputs(cfg, model, args.range_samples))
        info = export_qdq(model, state, example, args.out, calib,
                          drq=args.drq, rorq=args.rorq, heads=args.heads,
                          output_qdq=not args.no_output_qdq,
                          int4=not args.no_int4, embedding=args.embedding)
        print(f'QDQ: weights stored {info["folded"]}; '
              f'{info["integer_capable"]} of {info["linear_conv"]} '
              'quantized Linear/Conv layers lowered for integer kernels; '
              f'{info["bn_folded"]} BatchNorms folded into their Conv; '
              f'embedding tables {info["embeddings"] or "float"}')
    else:
        export_onnx(model, example, args.out)
    import onnx
    onnx.checker.check_model(args.out)
    opt = osp.splitext(args.out)[0] + '.ort-optimized.onnx'
    session = ort_session(args.out, optimized_path=opt)
    print(f'ONNX Runtime kernels: {kernel_counts(opt)} (optimised graph: '
          f'{opt})')
    diff = max_abs_diff(model, session, example)
    what = 'fake-quantized PyTorch' if args.ptq_params else 'PyTorch'
    print(f'{args.out}: onnx.checker OK; max |ORT - {what}| logits = '
          f'{diff:.3g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
