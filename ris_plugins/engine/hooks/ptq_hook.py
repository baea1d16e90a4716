"""``PTQHook``: calibrate and fake-quantize a trained model before testing.

Adding a quantization method base to a test config is all it takes to
evaluate a quantized model: ``mim test mmseg <quant-config> --checkpoint
<fp-ckpt>``.  The FP checkpoint is loaded first (``Runner.test`` loads it
before the test loop's ``before_test``), then the hook quantizes the
model, calibrates it on ``calibrate_steps`` training samples (or reloads
saved parameters), and the test loop evaluates the fake-quantized model.
This mirrors mmrazor's ``PTQLoop``
(``mmrazor/engine/runner/quantization_loops.py``: calibrate on
``calibrate_steps`` batches, save ``model_ptq.pth``, then test) without
its FX tracing.  The settings are the config's top-level dict ``ptq``
(:mod:`ris_plugins.quantization.settings` says why a dict and which keys).
"""
import copy
import json
import logging
import os.path as osp
from typing import Optional

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import DATASETS, HOOKS

from ...quantization import (calibrate_on_dataset, calibrate_with_budget,
                             file_sha256, load_quant_params, quantize_model,
                             read_quant_params, resolved_quant_cfg,
                             restore_model, save_quant_params, weights_sha256)
from ...quantization.mixed_precision import BitAssignment
from ...quantization.params import StaleFormatError, check_bits
from ...quantization.report import format_report
from ...quantization.settings import check_ptq_cfg

__all__ = ['PTQHook', 'calibrate_on_dataset']


@HOOKS.register_module()
class PTQHook(Hook):
    """Post-training quantization before the test loop.

    Takes no arguments: every setting is in the config's top-level dict
    ``ptq`` (validated at ``before_run``, before the checkpoint is
    loaded), so a quantized config is a model config + a method base
    (``configs/_base_/quantization/*.py``, which registers this hook and
    defines ``ptq``) + ``ptq = dict(quant_cfg=dict(w_bits=.., a_bits=..))``.

    ``ptq`` keys:

    - ``quant_cfg`` (dict): model-level quantization config (see
      :mod:`ris_plugins.quantization.quantize`): ``w_bits``, ``a_bits``,
      ``global_qconfig``, ``rules``, ``faithful``, ``budget`` (mixed
      precision: the most sensitive layers at 8 bits within a weight-size
      budget, see :mod:`ris_plugins.quantization.mixed_precision`; the
      chosen layers are logged and saved with the parameters, and a
      reload uses the saved choice without measuring again).
    - ``search`` (dict, optional): output-aware search settings
      ``dict(rounds=1, rows=1024)``; None = observers only.
    - ``calibrate_dataloader`` (dict, optional): ``dict(dataset=...)`` to
      calibrate on; default: the config's ``train_dataloader`` dataset
      with the test pipeline and ``sentence_mode='first'`` (the first
      sentence of each training ref).
    - ``calibrate_steps`` (int): number of calibration samples N >= 1 (32,
      the PTQ4RIS setting), run at batch size 1.
    - ``seed`` (int): seeds the choice of the N samples (a permutation of
      the dataset), so calibration is deterministic.
    - ``max_rows`` (int): input rows cached per layer and sample (>= 1).
    - ``max_cache_mb`` (float or None): bound (MiB, default 2048) of the
      cached layer inputs held at once: layers are calibrated group by
      group, the FP prefix re-run per group; None holds every layer's
      inputs at once (one forward per sample, most memory).  The
      parameters do not depend on it, so it is not part of the reuse
      check.
    - ``params_file`` (str): file name in the work dir for the calibrated
      parameters.  Reused only when it was calibrated from a checkpoint
      with the same contents (SHA-256 of the checkpoint file's bytes, or
      of the model's weights when there is no local file) with the same
      ``quant_cfg`` and calibration settings (search, steps, seed, rows,
      calibration dataset, model config); otherwise recalibrated and
      overwritten.
    - ``load_params`` (str, optional): load parameters from this file
      instead of calibrating.  It must have been calibrated from a
      checkpoint with the same contents and with the same ``quant_cfg``
      (its calibration data may differ).

    Every load (cache or ``load_params``) checks each quantizer's bit width
    and each parameter's shape against the quantized model.

    Raises:
        ValueError: at ``before_run``, a bad ``ptq`` (see
            :func:`~ris_plugins.quantization.settings.check_ptq_cfg`:
            missing, unknown key, bits unset or out of range, steps or
            rows not positive ints, invalid rule regex); at test start, a
            calibration set with fewer than ``calibrate_steps`` samples,
            parameters for another checkpoint, ``quant_cfg``, bit width or
            shape (naming the file, the quantizer / parameter and both
            values).  On any error the FP model is restored before
            re-raising.
    """

    priority = 'LOW'

    def __init__(self) -> None:
        self.settings: Optional[dict] = None
        self.state = None

    def before_run(self, runner) -> None:
        self.settings = check_ptq_cfg(runner.cfg.get('ptq'))

    def before_test(self, runner) -> None:
        if self.state is not None:
            return
        if self.settings is None:  # before_test without before_run
            self.before_run(runner)
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        model.eval()
        quant_cfg = self.settings['quant_cfg']
        meta = self._meta(runner, model)  # hashes the FP weights
        try:
            self._calibrate_or_load(runner, model, meta)
        except Exception:
            if self.state is not None:
                restore_model(model, self.state)
            self.state = None
            raise
        report = format_report(model, self.state, quant_cfg)
        print_log(report, logger='current')
        if is_main_process():
            with open(osp.join(runner.work_dir, 'ptq_report.txt'), 'w') as f:
                f.write(report + '\n')

    def _meta(self, runner, model) -> dict:
        """What the parameters belong to: the checkpoint's contents, the
        quantization config and the calibration settings (JSON)."""
        ckpt = runner._load_from
        if isinstance(ckpt, str) and osp.isfile(ckpt):
            digest = 'file:' + file_sha256(ckpt)
        else:
            digest = 'weights:' + weights_sha256(model)
        ptq = self.settings
        calibration = dict(search=ptq['search'],
                           steps=ptq['calibrate_steps'], seed=ptq['seed'],
                           max_rows=ptq['max_rows'],
                           dataset=self._dataset_cfg(runner),
                           model=runner.cfg.get('model'))
        return dict(checkpoint=str(ckpt), checkpoint_sha256=digest,
                    quant_cfg=_to_json(ptq['quant_cfg']),
                    calibration=_to_json(calibration))

    def _calibrate_or_load(self, runner, model, meta: dict) -> None:
        """Set ``self.state``: quantize ``model`` and load or calibrate."""
        ptq = self.settings
        if ptq['load_params']:
            self._load_explicit(model, ptq['load_params'], meta)
            return
        path = osp.join(runner.work_dir, ptq['params_file'])
        if osp.isfile(path):
            reason = self._stale_reason(path, meta)
            if reason is None:
                payload = read_quant_params(path)
                self._quantize_as_recorded(model, payload['meta'], path)
                load_quant_params(self.state, payload['state_dict'], path,
                                  payload['bits'])
                print_log(f'PTQ: reloaded calibrated parameters from {path}',
                          logger='current')
                return
            print_log(f'PTQ: not reusing {path}: {reason}; recalibrating',
                      logger='current', level=logging.WARNING)
        dataset = self._build_dataset(runner)
        args = (dataset, ptq['calibrate_steps'], ptq['seed'],
                ptq['max_rows'], ptq['search'], ptq['max_cache_mb'])
        if ptq['quant_cfg'].get('budget') is None:
            self.state = quantize_model(model, ptq['quant_cfg'])
            times = calibrate_on_dataset(self.state, model, *args)
        else:
            self.state, done, times = calibrate_with_budget(
                model, ptq['quant_cfg'], *args)
            meta = dict(meta, mixed_precision=done.to_meta())
            print_log(done.summary(), logger='current')
        print_log('PTQ times (s): ' + ', '.join(
            f'{k} {v:.1f}' for k, v in times.items()), logger='current')
        if is_main_process():
            save_quant_params(path, self.state, meta)
            print_log(f'PTQ: saved parameters to {path}', logger='current')

    def _quantize_as_recorded(self, model, saved: dict, source: str) -> None:
        """Quantize ``model`` with the config's ``quant_cfg``; with a
        ``budget``, with the mixed-precision assignment recorded in the
        parameter file (``saved`` is its meta) instead of measuring."""
        quant_cfg = self.settings['quant_cfg']
        if quant_cfg.get('budget') is None and 'mixed_precision' in saved:
            budget = saved['mixed_precision'].get('budget')
            raise ValueError(
                f'{source} holds mixed-precision parameters (budget '
                f'{budget}) but ptq.quant_cfg.budget is not set: set it to '
                'the same budget or recalibrate')
        if quant_cfg.get('budget') is not None:
            if 'mixed_precision' not in saved:
                raise ValueError(
                    f'{source} records no mixed-precision assignment but '
                    f'ptq.quant_cfg.budget={quant_cfg["budget"]} is set: it '
                    'was calibrated without a budget; drop the budget or '
                    'recalibrate')
            done = BitAssignment.from_meta(saved['mixed_precision'], source)
            print_log(f'PTQ: assignment from {source}\n' + done.summary(),
                      logger='current')
            quant_cfg = resolved_quant_cfg(
                dict(saved, quant_cfg=dict(quant_cfg)), source)
        self.state = quantize_model(model, quant_cfg)

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

    def _load_explicit(self, model, path: str, meta: dict) -> None:
        """``load_params``: same checkpoint contents and ``quant_cfg`` as
        recorded in the file, then bits, keys and shapes."""
        payload = read_quant_params(path)
        saved = payload['meta']
        self._quantize_as_recorded(model, saved, path)
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
        loader = self.settings['calibrate_dataloader']
        if loader is not None:
            return copy.deepcopy(loader['dataset'])
        train = runner.cfg.get('train_dataloader')
        test = runner.cfg.get('test_dataloader')
        if not train or not test:
            return None
        ds_cfg = copy.deepcopy(train['dataset'])
        ds_cfg['pipeline'] = copy.deepcopy(test['dataset']['pipeline'])
        ds_cfg['sentence_mode'] = 'first'
        return ds_cfg

    def _build_dataset(self, runner):
        steps = self.settings['calibrate_steps']
        source = ('calibrate_dataloader.dataset'
                  if self.settings['calibrate_dataloader'] is not None else
                  'train_dataloader.dataset with the test pipeline')
        ds_cfg = self._dataset_cfg(runner)
        if ds_cfg is None:
            raise ValueError('PTQHook: no calibration set: set '
                             'ptq.calibrate_dataloader=dict(dataset=...) or '
                             'keep train_dataloader and test_dataloader in '
                             'the config')
        dataset = DATASETS.build(ds_cfg)
        if len(dataset) < steps:
            raise ValueError(
                f'PTQHook: the calibration set ({source}) has {len(dataset)} '
                f'samples, fewer than calibrate_steps={steps}')
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
