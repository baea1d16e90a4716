"""``QUANTIZERS``: the registry of fake quantizers, a child of mmseg's
``MODELS``.

Quantizer configs keep their spelling (``dict(type='UniformQuantizer',
...)`` in ``global_qconfig`` / ``rules``); they are looked up here only,
so a model type can never be taken for a quantizer. Being a child of
``MODELS`` (scope ``'ris_plugins'``), the quantizers are also reachable
from ``MODELS`` as ``'ris_plugins.UniformQuantizer'`` (mmengine's scoped
lookup).

Building does not switch to the runner's default scope (``'mmseg'``,
whose ``MODELS`` cannot see its children's entries), so it works inside
and outside a Runner alike.
"""
from typing import Optional

from mmengine.registry import Registry
from mmseg.registry import MODELS


def build_quantizer(cfg: dict, registry: Registry,
                    default_args: Optional[dict] = None):
    """Build a quantizer from ``cfg`` (``type`` + constructor arguments).

    Raises:
        KeyError: a missing or unknown ``type``, naming it and the
            registered quantizer types.
    """
    args = dict(default_args or {}, **cfg)
    qtype = args.pop('type', None)
    qcls = registry.get(qtype) if isinstance(qtype, str) else None
    # ``get`` also searches the parent (MODELS): accept own entries only
    if qcls is None or qcls not in registry.module_dict.values():
        raise KeyError(f'unknown quantizer type {qtype!r}; valid types: '
                       f'{sorted(registry.module_dict)}')
    return qcls(**args)


QUANTIZERS = Registry(
    'quantizer',
    parent=MODELS,
    scope='ris_plugins',
    build_func=build_quantizer,
    locations=['ris_plugins.quantization.quantizers'])
