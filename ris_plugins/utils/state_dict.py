"""Strict, readable state-dict loading for converted checkpoints."""
from collections import defaultdict
from typing import Dict, Iterable, List

import torch.nn as nn


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
