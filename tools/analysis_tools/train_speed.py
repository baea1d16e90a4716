"""Training speed and peak memory of a config, alone or against a variant.

Builds the config's model with random weights and its optimizer wrapper,
feeds a synthetic batch of the config's input size and a real sentence
tokenized by its own pipeline (``ris_plugins.utils.synthetic``), and times
``model.train_step`` (data preprocessing, forward, backward, optimizer
step). Each setting runs in its own process, so peak memory (RSS on CPU,
``torch.cuda.max_memory_allocated`` on GPU) is that setting's alone; with
``--vs`` the two settings alternate process by process for ``--rounds``
rounds, so a noisy machine slows both alike and the ratio is measured side
by side. The ratio of the fastest steps is printed too: on a machine that
others load, the fastest step is the least disturbed one.

Examples::

    # today's LAVT at batch 2: median s/step after one warm-up step
    python tools/analysis_tools/train_speed.py \\
        configs/lavt/lavt_swin-b_8xb4-40e_refcoco-480x480.py --batch 2
    # activation checkpointing in Swin against the default, 3 rounds
    python tools/analysis_tools/train_speed.py \\
        configs/lavt/lavt_swin-b_8xb4-40e_refcoco-480x480.py --batch 2 \\
        --rounds 3 --vs model.backbone.with_cp=True
    # bf16 autocast on the CPU, channels_last, torch.compile
    ... --vs optim_wrapper.type=CPUAmpOptimWrapper
    ... --vs custom_hooks=ChannelsLastHook
    ... --vs compile=True

A config's ``AmpOptimWrapper`` (GPU only) is timed as the fp32
``OptimWrapper`` on the CPU (a note says so). ``ChannelsLastHook`` in
``custom_hooks`` and ``compile`` are applied as the runner would.
"""
import argparse
import json
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional

RESULT = 'TRAIN_SPEED_RESULT '


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='RefSegmentor config file')
    parser.add_argument('--batch', type=int, default=2,
                        help='samples per step (default 2)')
    parser.add_argument('--steps', type=int, default=3,
                        help='timed steps per process (default 3)')
    parser.add_argument('--warmup', type=int, default=1,
                        help='untimed steps first (default 1)')
    parser.add_argument('--rounds', type=int, default=1,
                        help='processes per setting (default 1)')
    parser.add_argument('--device', default='cpu', help="'cpu' or 'cuda'")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default={}, help='overrides of both settings')
    parser.add_argument('--vs', nargs='+', action=DictAction, default=None,
                        help='overrides of a second setting, timed '
                        'alternately against the first')
    parser.add_argument('--worker', action='store_true',
                        help=argparse.SUPPRESS)
    parser.add_argument('--overrides-json', default=None,
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.overrides_json:
        args.cfg_options = json.loads(args.overrides_json)
    for name in ('batch', 'steps', 'rounds'):
        if getattr(args, name) < 1:
            raise SystemExit(f'--{name} must be >= 1, got '
                             f'{getattr(args, name)}')
    if args.warmup < 0:
        raise SystemExit(f'--warmup must be >= 0, got {args.warmup}')
    return args


def peak_memory_mib(device: str) -> float:
    """Peak memory of this process in MiB: CUDA allocations on a GPU,
    resident set size (``ru_maxrss``, KiB on Linux) on the CPU."""
    import torch
    if device.startswith('cuda'):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_optim_wrapper(cfg, device: str) -> None:
    """On the CPU, replace a config's stock ``AmpOptimWrapper`` (which
    asserts a GPU) by the fp32 ``OptimWrapper`` with the same optimizer,
    clipping and paramwise settings, and say so; any other wrapper (e.g.
    ``CPUAmpOptimWrapper``) is kept."""
    wrapper = cfg.optim_wrapper
    if device.startswith('cuda') or wrapper.get('type') != 'AmpOptimWrapper':
        return
    for key in ('loss_scale', 'dtype', 'use_fsdp'):
        wrapper.pop(key, None)
    wrapper.type = 'OptimWrapper'
    print('note: AmpOptimWrapper needs a GPU; timing the fp32 OptimWrapper '
          '(optim_wrapper.type=CPUAmpOptimWrapper for bf16 on the CPU)',
          file=sys.stderr)


def time_steps(args: argparse.Namespace) -> Dict[str, object]:
    """Build, warm up and time ``args.steps`` training steps in this
    process; returns seconds per step and peak memory (MiB)."""
    import torch
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    import ris_plugins  # noqa: F401
    from ris_plugins.utils.synthetic import synthetic_batch

    register_all_modules()
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    cpu_optim_wrapper(cfg, args.device)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.to(args.device).train()
    apply_run_switches(cfg, model)
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = synthetic_batch(cfg, args.batch)
    times, warmup = [], []
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        model.train_step(batch, optim_wrapper)
        if args.device.startswith('cuda'):
            torch.cuda.synchronize()
        (times if step >= args.warmup else warmup).append(
            time.perf_counter() - start)
    return dict(seconds=times, warmup=warmup,
                peak_mib=peak_memory_mib(args.device),
                threads=torch.get_num_threads())


def apply_run_switches(cfg, model) -> None:
    """What the runner would do to the model for the config's run-level
    switches: ``custom_hooks`` entries of type ``ChannelsLastHook``
    (channels_last weights; on the command line a bare type name,
    ``custom_hooks=ChannelsLastHook``, since ``--cfg-options`` cannot
    spell a list of dicts) and ``compile`` (``torch.compile`` of
    ``model.train_step`` with the given options, as mmengine's
    ``Runner._maybe_compile``). Other hooks do not change the step."""
    import torch
    from ris_plugins.engine import to_channels_last
    hooks = cfg.get('custom_hooks', None) or []
    hooks = [hooks] if isinstance(hooks, str) else hooks
    hooks = [h if isinstance(h, str) else h.get('type') for h in hooks]
    if 'ChannelsLastHook' in hooks:
        to_channels_last(model)
    compile_cfg = cfg.get('compile', None)
    if compile_cfg:
        opts = {} if compile_cfg is True else dict(compile_cfg)
        model.train_step = torch.compile(model.train_step, **opts)


def run_worker(args: argparse.Namespace, overrides: dict) -> dict:
    """One setting in a fresh process; returns its result dict.

    Raises:
        RuntimeError: The worker failed (its output is included).
    """
    cmd = [sys.executable, osp.abspath(__file__), args.config, '--worker',
           '--batch', str(args.batch), '--steps', str(args.steps),
           '--warmup', str(args.warmup), '--device', args.device]
    if overrides:  # JSON, so lists and dicts survive the round trip
        cmd += ['--overrides-json', json.dumps(overrides)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f'worker {" ".join(cmd)} failed:\n'
                           f'{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}')
    return json.loads(lines[-1][len(RESULT):])


def summarise(name: str, results: List[dict]) -> Dict[str, float]:
    steps = [s for r in results for s in r['seconds']]
    row = dict(median=statistics.median(steps), low=min(steps),
               high=max(steps),
               peak=statistics.median(r['peak_mib'] for r in results))
    warm = [w for r in results for w in r.get('warmup', [])[:1]]
    first = (f', first step {statistics.median(warm):.1f} s'
             if warm else '')
    print(f'{name}: {row["median"]:.3f} s/step (median of {len(steps)}, '
          f'{row["low"]:.3f}-{row["high"]:.3f}), peak memory '
          f'{row["peak"]:.0f} MiB, {results[0]["threads"]} threads{first}')
    return row


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(RESULT + json.dumps(time_steps(args)), flush=True)
        return
    settings = [(f'A ({args.cfg_options or "config as is"})',
                 dict(args.cfg_options))]
    if args.vs is not None:
        settings.append((f'B (A + {args.vs})',
                         dict(args.cfg_options, **args.vs)))
    results: Dict[str, List[dict]] = {name: [] for name, _ in settings}
    for _ in range(args.rounds):
        for name, overrides in settings:
            results[name].append(run_worker(args, overrides))
    print(f'{args.config}, batch {args.batch}, {args.steps} timed steps '
          f'after {args.warmup} warm-up, {args.rounds} round(s), '
          f'{args.device}')
    rows = [summarise(name, res) for name, res in results.items()]
    if len(rows) == 2:
        a, b = results.values()
        pairs = [statistics.median(x['seconds']) /
                 statistics.median(y['seconds']) for x, y in zip(a, b)]
        rate = rows[0]['median'] / rows[1]['median']
        memory = rows[1]['peak'] / rows[0]['peak']
        per_round = ', '.join(f'{p:.2f}' for p in pairs)
        fastest = rows[0]['low'] / rows[1]['low']
        print(f'step-rate ratio B/A: {rate:.2f}x (per round: {per_round}; '
              f'fastest steps: {fastest:.2f}x); peak memory B/A: '
              f'{memory:.2f}x')


if __name__ == '__main__':
    main()
