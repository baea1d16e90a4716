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
import json
import logging
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

from ...quantization import (all_gather_caches, calibrate, file_sha256,
                             load_quant_file, load_quant_params,
                             quantize_model, read_quant_params, restore_model,
                             save_quant_params, validate_quant_cfg,
                             weights_sha256)
from ...quantization.params import StaleFormatError, check_bits
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
        calibrate_steps (int): Number of calibration samples N >= 1 (32,
            the PTQ4RIS setting).  Run at batch size 1.
        seed (int): Seeds the choice of the N samples (a permutation of
            the dataset), so calibration is deterministic.
        max_rows (int): Input rows cached per layer and sample (>= 1).
        params_file (str): File name in the work dir for the calibrated
            parameters.  Reused only when it was calibrated from a
            checkpoint with the same contents (SHA-256 of the checkpoint
            file's bytes, or of the model's weights when there is no local
            file) with the same ``quant_cfg`` and calibration settings
            (search, steps, seed, rows, calibration dataset, model
            config); otherwise recalibrated and overwritten.
        load_params (str, optional): Load parameters from this file
            instead of calibrating.  It must have been calibrated from a
            checkpoint with the same contents and with the same
            ``quant_cfg`` (its calibration data may differ).

    Every load (cache or ``load_params``) checks each quantizer's bit width
    and each parameter's shape against the quantized model.

    Raises:
        ValueError: at build time, ``calibrate_steps`` or ``max_rows`` not
            a positive int, or a bad ``quant_cfg`` (unknown key, invalid
            rule regex); at test start, a calibration set with fewer than
            ``calibrate_steps`` samples, parameters for another checkpoint,
            ``quant_cfg``, bit width or shape (naming the file, the
            quantizer / parameter and both values).  On any error the FP
            model is restored before re-raising.
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
        for key, value in (('calibrate_steps', calibrate_steps),
                           ('max_rows', max_rows)):
            if isinstance(value, bool) or not isinstance(
                    value, int) or value < 1:
                raise ValueError(f'PTQHook: {key} must be a positive int, '
                                 f'got {value!r}')
        validate_quant_cfg(quant_cfg, require_bits=False)
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
        meta = self._meta(runner, model)  # hashes the FP weights
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

    def _meta(self, runner, model) -> dict:
        """What the parameters belong to: the checkpoint's contents, the
        quantization config and the calibration settings (JSON)."""
        ckpt = runner._load_from
        if isinstance(ckpt, str) and osp.isfile(ckpt):
            digest = 'file:' + file_sha256(ckpt)
        else:
            digest = 'weights:' + weights_sha256(model)
        calibration = dict(search=self.search, steps=self.calibrate_steps,
                           seed=self.seed, max_rows=self.max_rows,
                           dataset=self._dataset_cfg(runner),
                           model=runner.cfg.get('model'))
        return dict(checkpoint=str(ckpt), checkpoint_sha256=digest,
                    quant_cfg=_to_json(self.quant_cfg),
                    calibration=_to_json(calibration))

    def _calibrate_or_load(self, runner, model, meta: dict) -> None:
        if self.load_params:
            self._load_explicit(self.load_params, meta)
            return
        path = osp.join(runner.work_dir, self.params_file)
        if osp.isfile(path):
            reason = self._stale_reason(path, meta)
            if reason is None:
                load_quant_file(self.state, path)
                print_log(f'PTQ: reloaded calibrated parameters from {path}',
                          logger='current')
                return
            print_log(f'PTQ: not reusing {path}: {reason}; recalibrating',
                      logger='current', level=logging.WARNING)
        dataset = self._build_dataset(runner)
        times = calibrate_on_dataset(self.state, model, dataset,
                                     self.calibrate_steps, self.seed,
                                     self.max_rows, self.search)
        print_log('PTQ times (s): ' + ', '.join(
            f'{k} {v:.1f}' for k, v in times.items()), logger='current')
        if is_main_process():
            save_quant_params(path, self.state, meta)
            print_log(f'PTQ: saved parameters to {path}', logger='current')

    @staticmethod
    def _stale_reason(path: str, meta: dict) -> Optional[str]:
        """Why the cached file cannot be reused, or None.  A file that is
        not a parameter file at all is an error (never overwritten)."""
        try:
            saved = read_quant_params(path)['meta']
        except StaleFormatError:
            return 'written by an older version (no bit widths or shapes)'
        if saved.get('checkpoint_sha256') != meta['checkpoint_sha256']:
            return (f"the checkpoint's contents differ (file records "
                    f"{saved.get('checkpoint')} sha256 "
                    f"{saved.get('checkpoint_sha256')}, the model holds "
                    f"{meta['checkpoint']} sha256 "
                    f"{meta['checkpoint_sha256']})")
        for key in ('quant_cfg', 'calibration'):
            if saved.get(key) != meta[key]:
                where, old, new = _first_difference(
                    _from_json(saved.get(key)), json.loads(meta[key]), key)
                return f'{where} changed from {old!r} to {new!r}'
        return None

    def _load_explicit(self, path: str, meta: dict) -> None:
        """``load_params``: same checkpoint contents and ``quant_cfg`` as
        recorded in the file, then bits, keys and shapes."""
        payload = read_quant_params(path)
        saved = payload['meta']
        check_bits(self.state, payload['bits'], path)
        if saved.get('checkpoint_sha256') != meta['checkpoint_sha256']:
            raise ValueError(
                f'{path} was calibrated for checkpoint '
                f"{saved.get('checkpoint')} (sha256 "
                f"{saved.get('checkpoint_sha256')}) but the model was loaded "
                f"from {meta['checkpoint']} (sha256 "
                f"{meta['checkpoint_sha256']}): its parameters are stale; "
                'recalibrate (drop load_params)')
        if saved.get('quant_cfg') != meta['quant_cfg']:
            where, old, new = _first_difference(
                _from_json(saved.get('quant_cfg')),
                json.loads(meta['quant_cfg']), 'quant_cfg')
            raise ValueError(f'{path} was calibrated with {where} = {old!r} '
                             f'but the model is quantized with {new!r}')
        load_quant_params(self.state, payload['state_dict'], path,
                          payload['bits'])
        print_log(f'PTQ: loaded parameters from {path}', logger='current')

    def _dataset_cfg(self, runner) -> Optional[dict]:
        """The calibration dataset config (None if the config has none)."""
        if self.calibrate_dataloader is not None:
            return copy.deepcopy(self.calibrate_dataloader['dataset'])
        train = runner.cfg.get('train_dataloader')
        test = runner.cfg.get('test_dataloader')
        if not train or not test:
            return None
        ds_cfg = copy.deepcopy(train['dataset'])
        ds_cfg['pipeline'] = copy.deepcopy(test['dataset']['pipeline'])
        ds_cfg['sentence_mode'] = 'first'
        return ds_cfg

    def _build_dataset(self, runner):
        source = ('calibrate_dataloader.dataset' if self.calibrate_dataloader
                  is not None else 'train_dataloader.dataset with the test '
                  'pipeline')
        ds_cfg = self._dataset_cfg(runner)
        if ds_cfg is None:
            raise ValueError('PTQHook: no calibration set: set '
                             'calibrate_dataloader=dict(dataset=...) or keep '
                             'train_dataloader and test_dataloader in the '
                             'config')
        dataset = DATASETS.build(ds_cfg)
        if len(dataset) < self.calibrate_steps:
            raise ValueError(
                f'PTQHook: the calibration set ({source}) has {len(dataset)} '
                f'samples, fewer than calibrate_steps={self.calibrate_steps}')
        return dataset


def _to_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _from_json(text):
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return text


def _first_difference(old, new, where: str):
    """``(path, old value, new value)`` of the first difference of two
    JSON-like values (dicts by sorted key, lists by index)."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key, '<unset>') != new.get(key, '<unset>'):
                return _first_difference(old.get(key, '<unset>'),
                                         new.get(key, '<unset>'),
                                         f'{where}.{key}')
    elif (isinstance(old, list) and isinstance(new, list)
          and len(old) == len(new)):
        for i, (a, b) in enumerate(zip(old, new)):
            if a != b:
                return _first_difference(a, b, f'{where}[{i}]')
    return where, old, new


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

    Raises:
        ValueError: ``steps`` not a positive int, or a dataset with fewer
            than ``steps`` samples (0 included).
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f'calibrate_steps must be a positive int, got '
                         f'{steps!r}')
    if len(dataset) < steps:
        raise ValueError(f'the calibration set ({type(dataset).__name__}) '
                         f'has {len(dataset)} samples, fewer than '
                         f'calibrate_steps={steps}')
    gen = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=gen)[:steps].tolist()
    rank, world = get_dist_info()

    def run_sample(pos: int) -> None:
        data = model.data_preprocessor(
            pseudo_collate([dataset[indices[pos]]]), False)
        model(**data, mode='tensor')

    start = time.perf_counter()
    times = calibrate(state, run_sample, range(rank, len(indices), world),
                      max_rows=max_rows, search=search,
                      gather=all_gather_caches if world > 1 else None)
    times['total'] = time.perf_counter() - start
    return times
