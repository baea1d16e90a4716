"""Trainable / frozen parameter accounting by top-level module."""
from typing import List, Optional, Tuple, Union

import torch.nn as nn
from mmengine.logging import MMLogger, print_log

ParamRow = Tuple[str, int, int]


def param_table(model: nn.Module) -> List[ParamRow]:
    """Count parameters per top-level child of ``model``.

    Each parameter is counted once (shared tensors are attributed to the
    first child that owns them, in ``named_children`` order); parameters
    registered directly on ``model`` form a row named ``'(self)'``.
    Buffers (e.g. BN running stats) are not parameters and are excluded.

    Args:
        model (nn.Module): Any module (e.g. a segmentor).

    Returns:
        list[tuple[str, int, int]]: ``(name, trainable, frozen)`` per child
        that owns parameters, then a final ``('total', trainable,
        frozen)`` row. Trainable = ``requires_grad``.
    """
    seen = set()
    rows: List[ParamRow] = []

    def count(params) -> Tuple[int, int]:
        trainable = frozen = 0
        for p in params:
            if id(p) in seen:
                continue
            seen.add(id(p))
            if p.requires_grad:
                trainable += p.numel()
            else:
                frozen += p.numel()
        return trainable, frozen

    own = count(model.parameters(recurse=False))
    if sum(own):
        rows.append(('(self)', *own))
    for name, child in model.named_children():
        t, f = count(child.parameters())
        if t or f:
            rows.append((name, t, f))
    rows.append(('total', sum(r[1] for r in rows), sum(r[2] for r in rows)))
    return rows


def format_param_table(rows: List[ParamRow]) -> str:
    """Render :func:`param_table` rows as an aligned text table with a
    trainable-percentage column (of each row's own parameters) and a
    final line with the trainable share of the whole model."""
    head = ('module', 'trainable', 'frozen', 'trainable %')
    body = [(n, f'{t:,}', f'{f:,}', f'{100 * t / max(t + f, 1):.2f}')
            for n, t, f in rows]
    widths = [max(len(r[i]) for r in [head] + body) for i in range(4)]

    def line(cells: Tuple[str, ...]) -> str:
        return '  '.join([cells[0].ljust(widths[0])] +
                         [c.rjust(w) for c, w in zip(cells[1:], widths[1:])])

    sep = '-' * (sum(widths) + 6)
    lines = [line(head), sep] + [line(r) for r in body[:-1]]
    lines += [sep, line(body[-1])]
    _, t, f = rows[-1]
    lines.append(f'trainable: {t:,} / {t + f:,} parameters '
                 f'({100 * t / max(t + f, 1):.3f}%)')
    return '\n'.join(lines)


def log_param_table(model: nn.Module,
                    logger: Optional[Union[MMLogger, str]] = None) -> str:
    """Log the parameter table of ``model`` through mmengine's
    ``print_log`` and return the text.

    Args:
        model (nn.Module): The model.
        logger (MMLogger | str, optional): Passed to ``print_log``;
            defaults to ``'current'`` (the runner's logger, or print when
            none exists).

    Returns:
        str: The table as logged.
    """
    text = format_param_table(param_table(model))
    print_log(
        'Parameters by top-level module:\n' + text,
        logger=logger if logger is not None else 'current')
    return text
