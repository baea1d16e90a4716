"""Deployment benchmark: speed, file size, memory and accuracy of a RIS model
in PyTorch and ONNX Runtime, FP32 and quantized.

For each ``--model NAME CONFIG CHECKPOINT`` (``random`` as CHECKPOINT:
random weights, synthetic calibration) and each setting

============  =================================================================
torch-fp32    PyTorch eager FP32 (file: the state dict, ``torch.save``)
ort-fp32      ONNX Runtime FP32 (``export_onnx``)
ort-w8a8      ONNX Runtime, W8A8 calibrated, lowered to QDQ (``export_qdq``),
              word-embedding table int8 per row (``--embedding``)
ort-w4a8      ONNX Runtime, 4-bit weights stored as INT4, 8-bit activations,
              word-embedding table 4-bit (GatherBlockQuantized)
torch-w8a8    PyTorch fake quantization W8A8 (file: state dict + parameters)
torch-w4a8    PyTorch fake quantization W4A8 (ort-w4a8's calibration)
torch-w4a4    PyTorch fake quantization W4A4
============  =================================================================

it writes the files, then measures in one fresh process per setting (so
peak RSS is that setting's): ms/image at batch 1 with 1 and 2 threads
(median of ``--runs`` timed runs after ``--warmup``), the process's peak RSS
(MiB, ``ru_maxrss``: Python, libraries and the model) and, with
``--val-samples``, mIoU / oIoU on the first N samples of the config's
validation split. Settings run round-robin, ``--rounds`` times, so the
compared settings see the same machine load; the medians pool all rounds.

Calibration: ``--method`` (a ``configs/_base_/quantization`` base) on
``--calib-samples`` training samples (``calibrate_on_dataset``), or on
synthetic inputs for ``random`` checkpoints.

Example (one demo model; the README's table adds LAVT-small and CRIS-small
with two more ``--model``)::

    python tools/analysis_tools/deploy_benchmark.py --calib-samples 8 \\
        --model baseline \\
        configs/demo/ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py \\
        random --out work_dirs/deploy_benchmark
"""
import argparse
import copy
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time

import torch
from mmengine.config import Config

QUANT = osp.join(osp.dirname(osp.abspath(__file__)), '..', '..', 'configs',
                 '_base_', 'quantization')
SETTINGS = ('torch-fp32', 'ort-fp32', 'ort-w8a8', 'ort-w4a8', 'torch-w8a8',
            'torch-w4a8', 'torch-w4a4')
BITS = {'ort-w8a8': 'w8a8', 'ort-w4a8': 'w4a8', 'torch-w8a8': 'w8a8',
        'torch-w4a8': 'w4a8', 'torch-w4a4': 'w4a4'}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', nargs=3, action='append', required=True,
                   metavar=('NAME', 'CONFIG', 'CHECKPOINT'))
    p.add_argument('--settings', nargs='+', default=list(SETTINGS),
                   choices=SETTINGS)
    p.add_argument('--method', default='ptq4ris')
    p.add_argument('--drq', default='int8', choices=('exact', 'int8'),
                   help='DRQ lowering for the ORT settings')
    p.add_argument('--rorq', default='int8', choices=('exact', 'int8'),
                   help='RORQ lowering for the ORT settings')
    p.add_argument('--heads', default='int8', choices=('exact', 'int8'),
                   help='lowering of per-head attention operands for the '
                   'ORT settings')
    p.add_argument('--embedding', default='auto',
                   choices=('auto', 'float', 'int8', 'int4'),
                   help='word-embedding tables of the ORT quantized files '
                   '(auto: int8 for W8A8, int4 for W4A8)')
    p.add_argument('--calib-samples', type=int, default=32)
    p.add_argument('--val-samples', type=int, default=0)
    p.add_argument('--data-root', default=None)
    p.add_argument('--shape', type=int, nargs=2, default=None)
    p.add_argument('--runs', type=int, default=20)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--rounds', type=int, default=1)
    p.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    p.add_argument('--out', default='work_dirs/deploy_benchmark')
    p.add_argument('--worker', default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ------------------------------------------------------------- building
def load_cfg(path: str, args) -> Config:
    cfg = Config.fromfile(path)
    if args.shape:
        cfg.model.data_preprocessor.size = tuple(args.shape)
    if args.data_root:
        for key in ('train_dataloader', 'val_dataloader'):
            cfg[key].dataset.data_root = args.data_root
    return cfg


def build_fp(cfg: Config, ckpt: str):
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    if ckpt != 'random':
        load_checkpoint(model, ckpt, map_location='cpu')
    return model.eval()


def quant_cfg(method: str, bits: str) -> dict:
    from ris_plugins.quantization.settings import parse_bits
    hook = Config.fromfile(osp.join(QUANT, f'{method}.py')).ptq
    qc = copy.deepcopy(hook['quant_cfg'].to_dict())
    qc.update(parse_bits(bits))
    return qc, hook.get('search'), hook.get('calibrate_steps', 32)


def calibrated(cfg, ckpt, bits, args):
    """(model, state) calibrated like PTQHook (training split) or on
    synthetic inputs for random weights."""
    from ris_plugins.quantization import calibrate, quantize_model
    from ris_plugins.utils.synthetic import synthetic_inputs
    model = build_fp(cfg, ckpt)
    qc, search, _ = quant_cfg(args.method, bits)
    state = quantize_model(model, qc)
    n = args.calib_samples
    if ckpt == 'random':
        inputs = synthetic_inputs(cfg, n)
        calibrate(state, lambda i: model(*inputs[i]), range(n),
                  search=search)
    else:
        from ris_plugins.quantization import calibrate_on_dataset
        calibrate_on_dataset(state, model, calib_dataset(cfg), n,
                             search=search)
    return model, state


def calib_dataset(cfg: Config):
    from mmseg.registry import DATASETS
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    ds_cfg.pipeline = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    ds_cfg.sentence_mode = 'first'
    return DATASETS.build(ds_cfg)


def range_inputs(model, cfg, ckpt, n):
    from mmengine.dataset import pseudo_collate
    from ris_plugins.utils.synthetic import synthetic_inputs
    if ckpt == 'random':
        return synthetic_inputs(cfg, n)
    ds = calib_dataset(cfg)
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(
        0))[:n].tolist()
    out = []
    for i in idx:
        d = model.data_preprocessor(pseudo_collate([ds[i]]), False)
        out.append((d['inputs'].float(), d['tokens'], d['text_mask']))
    return out


def prepare(name, cfg_path, ckpt, args) -> dict:
    """Write every setting's file; returns {setting: path}."""
    from ris_plugins.deploy import export_onnx
    from ris_plugins.deploy.qdq import export_qdq
    from ris_plugins.quantization import save_quant_params
    from ris_plugins.utils.synthetic import synthetic_inputs
    cfg = load_cfg(cfg_path, args)
    out = osp.join(args.out, name)
    os.makedirs(out, exist_ok=True)
    example = synthetic_inputs(cfg, 1)[0]
    files, info = {}, {}
    fp = build_fp(cfg, ckpt)
    if 'torch-fp32' in args.settings:
        files['torch-fp32'] = osp.join(out, 'fp32.pth')
        torch.save(fp.state_dict(), files['torch-fp32'])
    if 'ort-fp32' in args.settings:
        files['ort-fp32'] = export_onnx(fp, example,
                                        osp.join(out, 'fp32.onnx'))
    cache = {}  # one calibration per bit setting (ORT and PyTorch share)
    for setting in args.settings:
        if setting not in BITS:
            continue
        start = time.perf_counter()
        if BITS[setting] not in cache:
            cache[BITS[setting]] = calibrated(cfg, ckpt, BITS[setting], args)
        model, state = cache[BITS[setting]]
        if setting.startswith('ort'):
            path = osp.join(out, f'{BITS[setting]}.onnx')
            info[setting] = export_qdq(
                model, state, example, path,
                range_inputs(model, cfg, ckpt, args.calib_samples),
                drq=args.drq, rorq=args.rorq, heads=args.heads,
                embedding=args.embedding)
        else:  # the FP weights + the calibrated parameters
            path = osp.join(out, f'{BITS[setting]}.pth')
            params = path.replace('.pth', '_params.pth')
            save_quant_params(params, state)
            torch.save(build_fp(cfg, ckpt).state_dict(), path)
            info[setting] = dict(params=params)
        info.setdefault(setting, {})['prepare_s'] = round(
            time.perf_counter() - start, 1)
        files[setting] = path
        print(f'{name} {setting}: {path} {info[setting]}', flush=True)
    return files, info


# --------------------------------------------------------------- worker
def peak_rss_mib() -> float:
    """This process's peak resident set (VmHWM, MiB). Not ``ru_maxrss``,
    which Linux carries over from the parent across fork + exec."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def runner_for(setting, path, cfg, ckpt, args, threads):
    """A callable (img, tokens, mask) -> logits for one setting."""
    if setting.startswith('ort'):
        from ris_plugins.deploy import ORTSegmentor
        return ORTSegmentor(path, threads=threads), None
    torch.set_num_threads(threads)
    model = build_fp(cfg, 'random')
    state_dict = torch.load(path, map_location='cpu', weights_only=True)
    model.load_state_dict(state_dict)
    if setting in BITS:
        from ris_plugins.quantization import load_quant_file, quantize_model
        qc, _, _ = quant_cfg(args.method, BITS[setting])
        state = quantize_model(model, qc)
        load_quant_file(state, path.replace('.pth', '_params.pth'))
    return model, model


def time_runner(run, inputs, args) -> float:
    with torch.no_grad():
        for _ in range(args.warmup):
            run(*inputs)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            run(*inputs)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def evaluate(run, model_like, cfg, args) -> dict:
    """mIoU / oIoU on the first ``--val-samples`` validation samples with
    the config's postprocessing, the forward replaced by ``run``."""
    from ris_plugins.evaluation import build_val_subset
    loader, evaluator = build_val_subset(cfg, args.val_samples, num_workers=0)
    if model_like is not None:  # a PyTorch setting: run is the model
        model = model_like
    else:  # ONNX Runtime: a FP model's pre/post-processing around run
        model = build_fp(cfg, 'random')
        model._forward = lambda img, tok, mask: run(img.float(), tok, mask)
    with torch.no_grad():
        for batch in loader:
            evaluator.process(model.test_step(batch), batch)
    res = evaluator.evaluate(len(loader.dataset))
    return {k: round(float(v), 2) for k, v in res.items()
            if k in ('mIoU', 'oIoU')}


def worker(args) -> None:
    spec = json.loads(args.worker)
    from mmseg.utils import register_all_modules
    import ris_plugins  # noqa: F401
    from ris_plugins.utils.synthetic import synthetic_inputs
    register_all_modules()
    cfg = load_cfg(spec['config'], args)
    inputs = synthetic_inputs(cfg, 1)[0]
    result = {'ms': {}}
    for threads in args.threads:
        run, model = runner_for(spec['setting'], spec['path'], cfg,
                                spec['ckpt'], args, threads)
        result['ms'][str(threads)] = time_runner(run, inputs, args)
    if spec.get('evaluate'):
        result.update(evaluate(run, model, cfg, args))
    result['peak_rss_mib'] = peak_rss_mib()
    print('RESULT ' + json.dumps(result), flush=True)


# ----------------------------------------------------------------- main
def run_worker(name, cfg_path, ckpt, setting, path, args, evaluate_):
    spec = dict(config=cfg_path, ckpt=ckpt, setting=setting, path=path,
                evaluate=evaluate_)
    cmd = [sys.executable, osp.abspath(__file__), '--model', name, cfg_path,
           ckpt, '--worker', json.dumps(spec), '--runs', str(args.runs),
           '--warmup', str(args.warmup), '--val-samples',
           str(args.val_samples), '--method', args.method, '--threads',
           *map(str, args.threads)]
    if args.shape:
        cmd += ['--shape', *map(str, args.shape)]
    if args.data_root:
        cmd += ['--data-root', args.data_root]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines()
             if ln.startswith('RESULT ')]
    if proc.returncode or not lines:
        raise RuntimeError(f'{name} {setting} failed:\n{proc.stderr[-3000:]}')
    return json.loads(lines[-1][len('RESULT '):])


def table(rows) -> str:
    nan = float('nan')  # thread counts not measured
    head = ('| model | setting | ms/img 1 thr | ms/img 2 thr | file (MiB) | '
            'peak RSS (MiB) | mIoU | oIoU |')
    lines = [head, '|' + '---|' * 8]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['setting']} | {r.get('ms_1', nan):.1f} | "
            f"{r.get('ms_2', nan):.1f} | {r['file_mib']:.1f} | "
            f"{r['rss_mib']:.0f} | "
            f"{r.get('mIoU', '-')} | {r.get('oIoU', '-')} |")
    return '\n'.join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    from mmseg.utils import register_all_modules
    import ris_plugins  # noqa: F401
    register_all_modules()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name, cfg_path, ckpt in args.model:
        files, info = prepare(name, cfg_path, ckpt, args)
        results = {s: [] for s in files}
        for rnd in range(args.rounds):
            for setting, path in files.items():
                results[setting].append(run_worker(
                    name, cfg_path, ckpt, setting, path, args,
                    evaluate_=bool(args.val_samples) and rnd == 0))
        for setting, res in results.items():
            size = osp.getsize(files[setting])
            if setting in BITS and setting.startswith('torch'):
                size += osp.getsize(info[setting]['params'])
            row = dict(model=name, setting=setting, file_mib=size / 2**20,
                       rss_mib=max(r['peak_rss_mib'] for r in res),
                       info=info.get(setting, {}))
            for t in args.threads:
                row[f'ms_{t}'] = statistics.median(
                    v for r in res for v in r['ms'][str(t)])
            for key in ('mIoU', 'oIoU'):
                if key in res[0]:
                    row[key] = res[0][key]
            rows.append(row)
            print(row, flush=True)
        with open(osp.join(args.out, 'deploy_benchmark.json'), 'w') as f:
            json.dump(rows, f, indent=1)
    md = table(rows)
    with open(osp.join(args.out, 'deploy_benchmark.md'), 'w') as f:
        f.write(md + '\n')
    print(md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
