"""Where a training iteration of a config spends its time, stage by stage.

Builds the config's Runner pieces (model, train dataloader on the real
data, optimizer wrapper), calls the hooks' ``before_run`` (e.g.
``ChannelsLastHook``), then runs ``--iters`` training iterations by hand,
forward and loss inside the optimizer wrapper's ``optim_context`` (bf16
autocast with ``CPUAmpOptimWrapper``) as ``train_step`` does, and times
each stage with ``time.perf_counter`` (CPU: every stage is
synchronous; on CUDA the device is synchronised at each boundary):

=============  =========================================================
data           ``next(dataloader)``: loading + pipeline (+ worker wait)
preprocess     ``model.data_preprocessor(batch, training=True)``
text encoder   ``model.encode_text`` (frozen encoders: the text cache, if
               the config enables it, while training)
visual+fusion  backbone, fusion and neck (``RefSegmentor._extract`` minus
               the text encoder)
head+loss      decode head forward and its losses
backward       ``loss.backward()``
optimizer      ``optim_wrapper.step()`` + ``zero_grad()``
=============  =========================================================

It prints the median milliseconds of each stage over the iterations after
``--warmup`` and its share of their sum. Models whose backbone encodes the
text itself (``text_input='tokens'``) report text and visual together.

Example::

    python tools/analysis_tools/train_profile.py \\
        configs/demo/ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py \\
        --iters 30 --cfg-options train_dataloader.num_workers=0
"""
import argparse
import statistics
import time
from typing import Dict, List, Optional

import torch

STAGES = ('data', 'preprocess', 'text encoder', 'visual+fusion',
          'head+loss', 'backward', 'optimizer')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='RefSegmentor config file')
    parser.add_argument('--iters', type=int, default=30,
                        help='timed iterations (default 30)')
    parser.add_argument('--warmup', type=int, default=5,
                        help='untimed iterations first (default 5)')
    parser.add_argument('--work-dir', default='work_dirs/train_profile')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        default={}, help='config overrides')
    return parser.parse_args(argv)


def timed(laps: List[float], fn):
    """``fn`` that appends its milliseconds to ``laps`` (CUDA synced)."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        laps.append(1e3 * (time.perf_counter() - start))
        return out

    return wrapper


def one_iteration(model, batch_iter, optim_wrapper) -> Dict[str, float]:
    """One training iteration; milliseconds per stage (see module doc).
    The text encoder is timed inside ``model._extract`` (the model's own
    path) and subtracted from visual+fusion."""
    from ris_plugins.models.segmentors.ref_segmentor import reads_text
    text_ms: List[float] = []
    if model.text_input != 'tokens':
        model.encode_text = timed(text_ms, type(model).encode_text.__get__(
            model))
    out: Dict[str, List[float]] = {s: [] for s in STAGES}
    batch = timed(out['data'], next)(batch_iter)
    data = timed(out['preprocess'], model.data_preprocessor)(batch, True)
    with optim_wrapper.optim_context(model):  # e.g. autocast, as train_step
        feats, text, aux = timed(out['visual+fusion'], model._extract)(
            data['inputs'], data['tokens'], data['text_mask'])
        head = model.decode_head
        args = (feats, data['data_samples'], model.train_cfg)

        def head_loss():
            losses = (head.loss(*args, text) if reads_text(head) else
                      head.loss(*args))
            losses.update(aux)
            return model.parse_losses(losses)[0]

        loss = timed(out['head+loss'], head_loss)()
    timed(out['backward'], loss.backward)()

    def step():
        optim_wrapper.step()
        optim_wrapper.zero_grad()

    timed(out['optimizer'], step)()
    ms = {s: sum(v) for s, v in out.items()}
    ms['text encoder'] = sum(text_ms)
    ms['visual+fusion'] -= ms['text encoder']
    return ms


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    args = parse_args(argv)
    from mmengine.config import Config
    from mmengine.runner import Runner
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    cfg.work_dir = args.work_dir
    runner = Runner.from_cfg(cfg)
    model = runner.model
    loader = runner.build_dataloader(cfg.train_dataloader)
    optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    runner.call_hook('before_run')  # e.g. ChannelsLastHook
    model.train()
    batch_iter = iter(loader)
    laps: Dict[str, List[float]] = {s: [] for s in STAGES}
    for i in range(args.warmup + args.iters):
        ms = one_iteration(model, batch_iter, optim_wrapper)
        if i >= args.warmup:
            for stage in STAGES:
                laps[stage].append(ms[stage])
    medians = {s: statistics.median(v) for s, v in laps.items()}
    total = sum(medians.values())
    print(f'\n{args.config}: {args.iters} iterations after {args.warmup} '
          f'warm-up, batch {cfg.train_dataloader.batch_size}, '
          f'{cfg.train_dataloader.num_workers} workers, '
          f'{torch.get_num_threads()} threads')
    print('| stage | median ms | share |\n|---|---|---|')
    for stage, ms in medians.items():
        print(f'| {stage} | {ms:.1f} | {100 * ms / total:.0f}% |')
    print(f'| sum of medians | {total:.1f} | 100% |')
    return medians


if __name__ == '__main__':
    main()
