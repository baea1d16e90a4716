"""Strict, readable state-dict loading for converted checkpoints and
``load_from`` / ``resume``."""
from collections import defaultdict
from typing import Dict, Iterable, List, Mapping

import torch
import torch.nn as nn
from mmengine.model import BaseTTAModel, is_model_wrapper
from torch.nn.modules.module import _IncompatibleKeys


def _group(keys: Iterable[str], depth: int) -> Dict[str, List[str]]:
    groups: Dict[str, List[str]] = defaultdict(list)
    for k in sorted(keys):
        groups['.'.join(k.split('.')[:depth])].append(k)
    return groups


def key_mismatch_report(missing: Iterable[str], unexpected: Iterable[str],
                        depth: int = 2) -> str:
    """Human-readable report of missing / unexpected keys, grouped by the
    first ``depth`` name components (e.g. ``backbone.stages``)."""
    lines = []
    for title, keys in (('missing', missing), ('unexpected', unexpected)):
        for group, ks in _group(keys, depth).items():
            lines.append(f'  {title} in {group}: {len(ks)} keys, e.g. '
                         f'{ks[:3]}')
    return '\n'.join(lines)


def load_state_dict_strict(model: nn.Module, state_dict: dict,
                           source: str = 'checkpoint') -> None:
    """Load ``state_dict`` into ``model``; any missing or unexpected key is
    an error (never a silent partial load).

    Args:
        model (nn.Module): Target model.
        state_dict (dict): Parameters and buffers.
        source (str): Name of the checkpoint, for the message.

    Raises:
        KeyError: Keys do not match; the message groups them by module.
        RuntimeError: A tensor shape does not match (from PyTorch).
    """
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KeyError(
            f'{source} does not match {type(model).__name__}:\n' +
            key_mismatch_report(result.missing_keys, result.unexpected_keys))


def state_dict_mismatch(model: nn.Module,
                        state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Try ``state_dict`` on ``model`` the way ``load_state_dict`` does.

    Walks the modules as ``torch.nn.Module.load_state_dict`` and mmengine's
    ``load_state_dict`` do, so each module's load pre-hooks run (e.g.
    mmpretrain's position-embedding resizing) and only genuine differences
    are reported. Matching tensors are copied into ``model`` as a side
    effect (the same copy the real load makes next).

    Args:
        model (nn.Module): Target model (a wrapper's ``.module`` is used).
        state_dict (Mapping[str, Tensor]): Parameters and buffers, keys
            already revised (no ``module.`` prefix).

    Returns:
        dict: ``missing`` (keys of the model absent from ``state_dict``,
        ``num_batches_tracked`` ignored as mmengine does), ``unexpected``
        (keys of ``state_dict`` the model lacks) and ``errors`` (PyTorch's
        messages, e.g. ``size mismatch for <key>: copying a param with shape
        <checkpoint shape> from checkpoint, the shape in current model is
        <model shape>``), each a list in model order.
    """
    missing: List[str] = []
    unexpected: List[str] = []
    errors: List[str] = []
    metadata = getattr(state_dict, '_metadata', None)

    def load(module: nn.Module, local: dict, prefix: str = '') -> None:
        if is_model_wrapper(module) or isinstance(module, BaseTTAModel):
            module = module.module
        meta = {} if metadata is None else metadata.get(prefix[:-1], {})
        module._load_from_state_dict(local, prefix, meta, True, missing,
                                     unexpected, errors)
        for name, child in module._modules.items():
            if child is not None:
                child_prefix = f'{prefix}{name}.'
                load(child, {
                    k: v
                    for k, v in local.items() if k.startswith(child_prefix)
                }, child_prefix)
        incompatible = _IncompatibleKeys(missing, unexpected)
        for hook in module._load_state_dict_post_hooks.values():
            hook(module, incompatible)

    with torch.no_grad():
        load(model, dict(state_dict))
    return dict(
        missing=[k for k in missing if 'num_batches_tracked' not in k],
        unexpected=unexpected,
        errors=errors)


def format_mismatch(mismatch: dict, first: int = 5) -> str:
    """Summarise :func:`state_dict_mismatch`: counts and the first ``first``
    keys (and messages, which name both shapes) of each kind."""
    lines = []
    for kind, title in (('missing', 'missing keys (in the model, not in '
                         'the checkpoint)'),
                        ('unexpected', 'unexpected keys (in the checkpoint, '
                         'not in the model)'),
                        ('errors', 'tensors that do not load')):
        items = mismatch[kind]
        if items:
            lines.append(f'  {len(items)} {title}, first: ' +
                         ('\n    ' if kind == 'errors' else '') +
                         ('\n    ' if kind == 'errors' else ', ').join(
                             items[:first]))
    return '\n'.join(lines)
