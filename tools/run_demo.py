"""The demo: generate RefShapes if missing, train the baseline with
``mim train``, evaluate it with ``mim test`` on val / testA / testB and on
the shuffled-sentence control, and print the metric table.

Usage::

    python tools/run_demo.py [--work-dir work_dirs/demo] [--data-root
        data/refshapes] [--skip-train]
"""
import argparse
import glob
import json
import os
import os.path as osp
import subprocess
import sys
import time
from typing import Dict, List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'demo',
                  'ris-baseline_r18-minilm_1xb16-2k_refshapes-160x160.py')
CONTROL = CONFIG.replace('.py', '_shuffled-text.py')
METRICS = ('oIoU', 'mIoU', 'Pr@0.5', 'Pr@0.6', 'Pr@0.7', 'Pr@0.8',
           'Pr@0.9')


def run(cmd: List[str]) -> float:
    """Run a command (output streamed), fail loudly; return seconds."""
    print('+', ' '.join(cmd), flush=True)
    start = time.time()
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        p for p in (ROOT, env.get('PYTHONPATH')) if p)
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    return time.time() - start


def mim() -> str:
    return osp.join(osp.dirname(sys.executable), 'mim')


def latest_metrics(work_dir: str) -> Dict[str, float]:
    """Metrics from the newest ``<timestamp>/<timestamp>.json`` mmengine's
    LoggerHook wrote after a test run."""
    files = sorted(glob.glob(osp.join(work_dir, '*', '*.json')))
    if not files:
        raise FileNotFoundError(f'no test results under {work_dir!r}')
    with open(files[-1]) as f:
        return json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/refshapes')
    parser.add_argument('--skip-train', action='store_true')
    args = parser.parse_args()
    work_dir = osp.join(ROOT, args.work_dir)
    data_opt = [f'train_dataloader.dataset.data_root={args.data_root}',
                f'val_dataloader.dataset.data_root={args.data_root}',
                f'test_dataloader.dataset.data_root={args.data_root}']
    times = {}
    if not osp.isfile(osp.join(ROOT, args.data_root, 'refshapes',
                               'refs(unc).p')):
        times['generate RefShapes'] = run([
            sys.executable,
            osp.join(ROOT, 'tools', 'dataset_converters',
                     'make_refshapes.py'), '--out', args.data_root
        ])
    if not args.skip_train:
        times['mim train'] = run([
            mim(), 'train', 'mmseg', CONFIG, '--work-dir', work_dir,
            '--cfg-options', *data_opt
        ])
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    rows = {}
    tests = [('val', CONFIG, 'val'), ('testA', CONFIG, 'testA'),
             ('testB', CONFIG, 'testB'),
             ('val, shuffled sentences', CONTROL, 'val')]
    for name, config, split in tests:
        out = osp.join(work_dir, 'test_' + name.replace(', ', '_').replace(
            ' ', '-'))
        split_key = ('test_dataloader.dataset.dataset.split' if config
                     == CONTROL else 'test_dataloader.dataset.split')
        root_opt = [o.replace('test_dataloader.dataset.',
                              'test_dataloader.dataset.dataset.')
                    if config == CONTROL else o for o in data_opt]
        times[f'mim test ({name})'] = run([
            mim(), 'test', 'mmseg', config, '--checkpoint', ckpt,
            '--work-dir', out, '--cfg-options', f'{split_key}={split}',
            *root_opt
        ])
        rows[name] = latest_metrics(out)
    print('\nRefShapes results (trained here, %s):' % osp.basename(CONFIG))
    print('| split | ' + ' | '.join(METRICS) + ' |')
    print('|---' * (len(METRICS) + 1) + '|')
    for name, res in rows.items():
        print(f'| {name} | ' + ' | '.join(f'{res[m]:.2f}'
                                          for m in METRICS) + ' |')
    gap = rows['val']['mIoU'] - rows['val, shuffled sentences']['mIoU']
    print(f'\nval mIoU drop with shuffled sentences: {gap:.2f} points')
    print('Wall time: ' + ', '.join(f'{k} {v:.0f} s'
                                     for k, v in times.items()) +
          f'; total {sum(times.values()):.0f} s')


if __name__ == '__main__':
    main()
