"""``PTQHook``: calibrate and fake-quantize a trained model before testing.

Adding the hook to a test config is all it takes to evaluate a quantized
model: ``mim test mmseg <quant-config> --checkpoint <fp-ckpt>``.  The FP
checkpoint is loaded first (``Runner.test`` loads it before the test
loop's ``before_test``), then the hook quantizes the model, calibrates it
on ``num_samples`` training samples (or reloads saved parameters), and
the test loop evaluates the fake-quantized model.  This mirrors mmrazor's
``PTQLoop`` (``mmrazor/engine/runner/quantization_loops.py``: calibrate on
``calibrate_steps`` batches, save ``model_ptq.pth``, then test) without its
FX tracing.
"""
import copy
import hashlib
import json
import os.path as osp
import time
from typing import Optional

import torch
from mmengine.dataset import pseudo_collate
from mmengine.dist import get_dist_info, is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import DATASETS, HOOKS

from ...quantization import (all_gather_caches, calibrate, load_quant_params, quantize_model,
                             read_quant_params, restore_model,
                             save_quant_params)
from ...quantization.report import format_report


@HOOKS.register_module()
class PTQHook(Hook):
    """Post-training quantization before the test loop.

    Args:
        quant_cfg (dict): Model-level quantization config (see
            :mod:`ris_plugins.quantization.quantize`): ``global_qconfig``,
            ``rules`` and ``w_bits`` / ``a_bits``.  Bits missing here are
            read from the config's top-level ``quant_bits`` (what the
            ``configs/_base_/quantization/w*a*.py`` bases set), so a
            quantized config is a model config + a method base + a bits
            base.
        search (dict, optional): Output-aware search settings
            ``dict(rounds=1, rows=1024)``; None = observers only.
        calibrate_dataloader (dict, optional): ``dict(dataset=...)`` to
            calibrate on; default: the config's ``train_dataloader``
            dataset with the test pipeline and ``sentence_mode='first'``
            (the first sentence of each training ref).
        calibrate_steps (int): Number of calibration samples N (32, the
            PTQ4RIS setting).  Run at batch size 1.
        seed (int): Seeds the choice of the N samples (a permutation of
            the dataset), so calibration is deterministic.
        max_rows (int): Input rows cached per layer and sample.
        params_file (str): File name in the work dir for the calibrated
            parameters; reused when its settings and checkpoint match.
        load_params (str, optional): Load parameters from this file
            instead of calibrating (must match the model).

    Raises:
        ValueError: fewer than ``calibrate_steps`` calibration samples, a
            bad ``quant_cfg`` or parameters that do not fit the model.
            On any error the FP model is restored before re-raising.
    """

    priority = 'LOW'

    def __init__(self,
                 quant_cfg: dict,
                 search: Optional[dict] = None,
                 calibrate_dataloader: Optional[dict] = None,
                 calibrate_steps: int = 32,
                 seed: int = 0,
                 max_rows: int = 256,
                 params_file: str = 'ptq_params.pth',
                 load_params: Optional[str] = None):
        self.quant_cfg = quant_cfg
        self.search = search
        self.calibrate_dataloader = calibrate_dataloader
        self.calibrate_steps = calibrate_steps
        self.seed = seed
        self.max_rows = max_rows
        self.params_file = params_file
        self.load_params = load_params
        self.state = None

    def before_test(self, runner) -> None:
        if self.state is not None:
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        model.eval()
        self.quant_cfg = self._with_bits(runner)
        meta = self._meta(runner)
        self.state = quantize_model(model, self.quant_cfg)
        try:
            self._calibrate_or_load(runner, model, meta)
        except Exception:
            restore_model(model, self.state)
            self.state = None
            raise
        report = format_report(model, self.state, self.quant_cfg)
        print_log(report, logger='current')
        if is_main_process():
            with open(osp.join(runner.work_dir, 'ptq_report.txt'), 'w') as f:
                f.write(report + '\n')

    def _with_bits(self, runner) -> dict:
        quant_cfg = dict(copy.deepcopy(self.quant_cfg))
        bits = runner.cfg.get('quant_bits') or {}
        for key in ('w_bits', 'a_bits'):
            if key not in quant_cfg:
                if key not in bits:
                    raise ValueError(
                        f'PTQHook: {key} is set neither in quant_cfg nor in '
                        "the config's quant_bits (inherit one of "
                        'configs/_base_/quantization/w*a*.py)')
                quant_cfg[key] = bits[key]
        return quant_cfg

    def _meta(self, runner) -> dict:
        cfg = json.dumps(dict(quant_cfg=self.quant_cfg, search=self.search,
                              calibrate_dataloader=self.calibrate_dataloader,
                              steps=self.calibrate_steps, seed=self.seed,
                              max_rows=self.max_rows),
                         sort_keys=True, default=str)
        return dict(config_sha1=hashlib.sha1(cfg.encode()).hexdigest(),
                    checkpoint=str(runner._load_from))

    def _calibrate_or_load(self, runner, model, meta: dict) -> None:
        path = osp.join(runner.work_dir, self.params_file)
        if self.load_params:
            payload = read_quant_params(self.load_params)
            load_quant_params(self.state, payload['state_dict'],
                              self.load_params)
            return
        if osp.isfile(path):
            payload = read_quant_params(path)
            if payload['meta'] == meta:
                load_quant_params(self.state, payload['state_dict'], path)
                print_log(f'PTQ: reloaded calibrated parameters from {path}',
                          logger='current')
                return
        dataset = self._build_dataset(runner)
        times = calibrate_on_dataset(self.state, model, dataset,
                                     self.calibrate_steps, self.seed,
                                     self.max_rows, self.search)
        print_log('PTQ times (s): ' + ', '.join(
            f'{k} {v:.1f}' for k, v in times.items()), logger='current')
        if is_main_process():
            save_quant_params(path, self.state, meta)
            print_log(f'PTQ: saved parameters to {path}', logger='current')

    def _build_dataset(self, runner):
        if self.calibrate_dataloader is not None:
            ds_cfg = copy.deepcopy(self.calibrate_dataloader['dataset'])
        else:
            ds_cfg = copy.deepcopy(runner.cfg.train_dataloader.dataset)
            ds_cfg.pipeline = copy.deepcopy(
                runner.cfg.test_dataloader.dataset.pipeline)
            ds_cfg.sentence_mode = 'first'
        dataset = DATASETS.build(ds_cfg)
        if len(dataset) < self.calibrate_steps:
            raise ValueError(
                f'PTQHook: the calibration set has {len(dataset)} samples, '
                f'fewer than calibrate_steps={self.calibrate_steps}')
        return dataset


def calibrate_on_dataset(state, model, dataset, steps: int = 32,
                         seed: int = 0, max_rows: int = 256,
                         search: Optional[dict] = None) -> dict:
    """Calibrate ``state`` (from :func:`quantize_model` on ``model``) on
    ``steps`` samples of ``dataset`` chosen by a seeded permutation, one
    sample per forward.  Under DDP each rank runs every world-th sample and
    the cached inputs are all-gathered, so every rank ends with the
    single-process parameters.

    Returns:
        dict: seconds per stage ('collect', 'init', 'search', 'total').
    """
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=gen)[:steps].tolist()
    rank, world = get_dist_info()

    def run_sample(pos: int) -> None:
        data = model.data_preprocessor(
            pseudo_collate([dataset[indices[pos]]]), False)
        model(data['inputs'], data['data_samples'], mode='tensor')

    start = time.perf_counter()
    times = calibrate(state, run_sample, range(rank, len(indices), world),
                      max_rows=max_rows, search=search,
                      gather=all_gather_caches if world > 1 else None)
    times['total'] = time.perf_counter() - start
    return times
