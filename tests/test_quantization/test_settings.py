"""The ``ptq`` config dict (``ris_plugins/quantization/settings.py``)."""
import os.path as osp

import pytest
from mmengine.config import Config

from ris_plugins.quantization.settings import (DEFAULTS, check_ptq_cfg,
                                               parse_bits)

from ..conftest import ROOT

QUANT = osp.join(ROOT, 'configs', '_base_', 'quantization')


def method(name='ptq4ris', **bits):
    ptq = Config.fromfile(osp.join(QUANT, f'{name}.py')).ptq.to_dict()
    ptq['quant_cfg'].update(bits or dict(w_bits=4, a_bits=4))
    return ptq


@pytest.mark.parametrize('name', ['minmax', 'omse', 'percentile', 'ptq4ris',
                                  'ptq4ris_faithful'])
def test_every_method_base_is_valid_once_bits_are_set(name):
    ptq = check_ptq_cfg(method(name))
    assert set(ptq) == set(DEFAULTS)
    assert ptq['max_cache_mb'] == 2048 and ptq['calibrate_steps'] == 32
    with pytest.raises(ValueError, match=r'ptq.quant_cfg.w_bits is not set'):
        check_ptq_cfg(Config.fromfile(osp.join(QUANT, f'{name}.py')).ptq)


def test_derived_bases_replace_the_quantizers_of_minmax():
    """``_delete_`` in the derived bases: no minmax option leaks in (the
    ptq4ris head scheme stays symmetric)."""
    m = method('ptq4ris')['quant_cfg']['global_qconfig']['m_qscheme']
    assert m == dict(type='UniformQuantizer', granularity='head', ch_axis=1)


@pytest.mark.parametrize('change, match', [
    (dict(calibrate_stesp=3), r"ptq: unknown keys \['calibrate_stesp'\]; "
     r"valid keys: \['calibrate_dataloader', 'calibrate_steps'"),
    (dict(max_rows=0), r'ptq.max_rows must be a positive int, got 0'),
    (dict(max_cache_mb=0), r'ptq.max_cache_mb must be a positive number '
     r'\(MiB\) or None, got 0'),
    (dict(max_cache_mb='2G'), r"max_cache_mb must be .*got '2G'"),
    (dict(search=dict(rounds=1, row=8)), r"ptq.search: unknown keys "
     r"\['row'\]; valid keys: \('rounds', 'rows', 'chunk_elems'\)"),
    (dict(search=dict(rounds=0)), r'ptq.search.rounds must be a positive '
     r'int, got 0'),
    (dict(quant_cfg=None), r'ptq.quant_cfg must be a dict'),
])
def test_bad_settings_are_named(change, match):
    with pytest.raises(ValueError, match=match):
        check_ptq_cfg(dict(method(), **change))


def test_missing_or_bad_bits():
    with pytest.raises(ValueError, match=r'no PTQ settings; inherit one of '
                       r'configs/_base_/quantization'):
        check_ptq_cfg(None)
    with pytest.raises(ValueError, match=r'quant_cfg.a_bits must be an int '
                       r'in \[2, 16\], got 1'):
        check_ptq_cfg(method(w_bits=4, a_bits=1))
    assert check_ptq_cfg(dict(method(), max_cache_mb=None))[
        'max_cache_mb'] is None


def test_parse_bits():
    assert parse_bits('W4A8') == dict(w_bits=4, a_bits=8)
    with pytest.raises(ValueError, match=r"bit setting 'w4' is not of the "
                       r"form 'w<bits>a<bits>'"):
        parse_bits('w4')
    with pytest.raises(ValueError, match=r'quant_cfg.w_bits must be an int '
                       r'in \[2, 16\], got 32'):
        parse_bits('w32a8')
