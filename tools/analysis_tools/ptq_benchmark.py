"""Calibration cost of PTQ: wall time, peak memory, the speed-up over a
per-candidate full-forward search, and model size per bit setting.

Calibration cost does not depend on the weights or the pixels, so the
model is built from a config (random weights unless ``--checkpoint``) and
fed synthetic samples of the config's input size and token length.

Examples::

    # a demo model, 32 samples, with the per-candidate comparison
    python tools/analysis_tools/ptq_benchmark.py \\
        configs/demo/ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py \\
        --naive-layers 2
    # full LAVT (Swin-B, 480, BERT-base), 32 samples, streamed caches
    # (then --max-cache-mb none: every cache at once, same parameters)
    python tools/analysis_tools/ptq_benchmark.py \\
        configs/lavt/lavt_swin-b_8xb4-40e_refcoco-480x480.py \\
        --random-text-encoder --skip-sizes
"""
import argparse
import copy
import resource
import time

import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

import ris_plugins  # noqa: F401
from ris_plugins.quantization import calibrate, quantize_model, search_layer
from ris_plugins.quantization.params import quant_state_dict, tensors_sha256
from ris_plugins.quantization.report import model_size_mb
from ris_plugins.quantization.settings import parse_bits
from ris_plugins.utils.synthetic import synthetic_inputs

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                 num_attention_heads=12, intermediate_size=3072)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(args) -> tuple:
    cfg = Config.fromfile(args.config)
    if args.random_text_encoder:
        cfg.model.text_encoder = dict(type='BertTextEncoder',
                                      config=BERT_BASE)
    model = MODELS.build(cfg.model).eval()
    if args.checkpoint:
        load_checkpoint(model, args.checkpoint, map_location='cpu')
    return cfg, model


def quant_cfg(method: str, bits: str) -> tuple:
    base = 'configs/_base_/quantization'
    hook = Config.fromfile(f'{base}/{method}.py').ptq
    qc = dict(hook.quant_cfg.to_dict(), **parse_bits(bits))
    return qc, hook.get('search')


def naive_search(model, state, name, data) -> tuple:
    """The straightforward search: for every candidate of the layer's
    weight quantizer, a full forward of every calibration sample, scoring
    the layer's output against FP with a forward hook.  Returns (chosen
    indices, seconds)."""
    layer = state.layers[name]
    q = layer.w_quantizer
    outs = []
    handle = layer.register_forward_hook(lambda m, i, o: outs.append(o))
    for qq in (x for _, x in state.quantizers()):
        qq.enabled = False
    start = time.perf_counter()
    with torch.no_grad():
        refs = []
        for inputs in data:
            model(*inputs)
            refs.append(outs.pop())
        layer.a_quantizer.enabled = True
        q.enabled = True
        errors = []
        for i in range(q.num_candidates()):
            q.select(torch.full(tuple(q.group_shape), i, dtype=torch.long))
            err = 0
            for inputs, ref in zip(data, refs):
                model(*inputs)
                err = err + (outs.pop() - ref).double().square().flatten(
                    0, -2).sum(0)
            errors.append(err)
    handle.remove()
    return torch.stack(errors).argmin(0), time.perf_counter() - start


def _cache_mb(value: str):
    if value.lower() == 'none':
        return None
    try:
        mb = float(value)
    except ValueError:
        mb = 0.0
    if not mb > 0:
        raise argparse.ArgumentTypeError(
            f'--max-cache-mb must be a positive number of MiB or "none", '
            f'got {value!r}')
    return mb


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config')
    parser.add_argument('--checkpoint')
    parser.add_argument('--samples', type=int, default=32)
    parser.add_argument('--method', default='ptq4ris')
    parser.add_argument('--bits', default='w4a4')
    parser.add_argument('--random-text-encoder', action='store_true',
                        help='BERT-base with random weights (no download)')
    parser.add_argument('--max-cache-mb', type=_cache_mb, default=2048.0,
                        help='bound (MiB) of the cached inputs held at once '
                        '(streamed calibration; default 2048 as in '
                        'calibrate_on_dataset); "none": all at once')
    parser.add_argument('--skip-sizes', action='store_true',
                        help='do not report the model size per bit setting')
    parser.add_argument('--naive-layers', type=int, default=0,
                        help='text-encoder Linear layers to also search '
                        'with per-candidate full forwards')
    args = parser.parse_args(argv)
    register_all_modules()
    torch.manual_seed(0)
    cfg, model = build(args)
    data = synthetic_inputs(cfg, args.samples)
    print(f'threads {torch.get_num_threads()}, model built, peak RSS '
          f'{peak_rss_mb():.0f} MiB')
    for bits in () if args.skip_sizes else ('w8a8', 'w6a6', 'w4a8', 'w4a4'):
        state = quantize_model(copy.deepcopy(model), quant_cfg('minmax',
                                                               bits)[0])
        fp_mb, q_mb = model_size_mb(model, state)
        print(f'size {bits.upper()}: {q_mb:.1f} MiB (FP32 {fp_mb:.1f} MiB)')
    qc, search = quant_cfg(args.method, args.bits)
    qmodel = copy.deepcopy(model) if args.naive_layers else model
    state = quantize_model(qmodel, qc)
    rss0 = peak_rss_mb()
    times = calibrate(state, lambda i: qmodel(*data[i]),
                      range(len(data)), search=search,
                      max_cache_mb=args.max_cache_mb)
    groups = times.pop('groups')
    print(f'{args.method} {args.bits.upper()} calibration of '
          f'{len(state.layers)} layers in {groups} group(s) on '
          f'{len(data)} samples: ' +
          ', '.join(f'{k} {v:.1f} s' for k, v in times.items()) +
          f'; peak RSS {peak_rss_mb():.0f} MiB (+{peak_rss_mb() - rss0:.0f})'
          '; quantizer parameters sha256 '
          f'{tensors_sha256(quant_state_dict(state))[:16]}')
    if args.naive_layers:
        compare(model, qc, data, args.naive_layers)


def compare(model, qc, data, num_layers: int) -> None:
    """Search the same layers both ways from the same initialisation and
    report the chosen weight steps and the time ratio."""
    state = quantize_model(model, qc)
    calibrate(state, lambda i: model(*data[i]),
              range(len(data)), max_rows=10**9)
    names = [n for n, m in state.layers.items() if n.startswith(
        'text_encoder') and type(m).__name__ == 'QuantLinear'][:num_layers]
    quantizers = [q for _, q in state.quantizers()]
    for name in names:
        layer = state.layers[name]
        init = copy.deepcopy(layer.w_quantizer.state_dict())
        for q in quantizers:  # FP model: cache the layer's FP input
            q.enabled = False
        cache = []
        handle = layer.register_forward_pre_hook(
            lambda m, a: cache.append(a[0].reshape(-1, a[0].shape[-1])))
        with torch.no_grad():
            for inputs in data:
                model(*inputs)
        handle.remove()
        layer.a_quantizer.enabled = layer.w_quantizer.enabled = True
        start = time.perf_counter()
        with torch.no_grad():  # weights, activation at its initial step
            search_layer(layer, 'Linear', [torch.cat(cache)],
                         children=('w_quantizer', ))
        local_s = time.perf_counter() - start
        local = copy.deepcopy(layer.w_quantizer.state_dict())
        layer.w_quantizer.load_state_dict(init)
        idx, naive_s = naive_search(model, state, name, data)
        layer.w_quantizer.select(idx)
        same = all(torch.equal(v, local[k]) for k, v in
                   layer.w_quantizer.state_dict().items())
        print(f'{name}: local search {local_s:.3f} s, per-candidate '
              f'forwards {naive_s:.1f} s, ratio {naive_s / local_s:.0f}x, '
              f'same steps: {same}')


if __name__ == '__main__':
    main()
