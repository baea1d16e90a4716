"""Refuse a ``load_from`` / ``resume`` checkpoint that does not fit the
model, instead of mmengine's warning and a run on random weights."""
import re
from collections import OrderedDict
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner.checkpoint import find_latest_checkpoint
from mmseg.registry import HOOKS

from ...utils.state_dict import format_mismatch, state_dict_mismatch

#: ``Runner.load_checkpoint``'s default ``revise_keys`` (mmengine 0.10.7).
REVISE_KEYS = [(r'^module.', '')]


@HOOKS.register_module()
class StrictLoadHook(Hook):
    """Make ``load_from``, ``mim test --checkpoint`` and ``resume`` strict.

    mmengine's ``Runner.load_or_resume`` loads with ``strict=False``: a
    checkpoint of another model loads with a warning, and ``mim test``
    prints metrics of random weights with exit status 0. This hook runs in
    ``after_load_checkpoint`` (which ``Runner.load_checkpoint`` calls for
    ``load_from`` and for ``resume``, before the weights are copied), tries
    the checkpoint on the model as ``load_state_dict`` does (load pre-hooks
    such as position-embedding resizing included) and raises if any key is
    missing or unexpected or any tensor does not load. Registered in
    ``configs/_base_/default_runtime.py`` as ``default_hooks.strict_load``.

    Args:
        strict (bool): Whether ``load_from`` must match exactly. Set False
            (``--cfg-options default_hooks.strict_load.strict=False``) to
            initialise a model partially on purpose; the mismatch is then
            logged as a warning. Resuming is always strict. Defaults to True.
        first (int): How many keys of each kind the error names.
            Defaults to 5.

    Raises:
        RuntimeError: From ``after_load_checkpoint``: the checkpoint does not
            match; the message names the file, the first missing /
            unexpected keys and, for tensors that do not load, the key and
            both shapes.
    """

    priority = 'LOWEST'  # after hooks that rewrite the checkpoint (EMA)

    def __init__(self, strict: bool = True, first: int = 5) -> None:
        self.strict = strict
        self.first = first

    @staticmethod
    def _source(runner) -> Optional[str]:
        """The file being loaded, as ``Runner.load_or_resume`` chooses it."""
        if runner._load_from is not None:
            return str(runner._load_from)
        if runner._resume:
            return find_latest_checkpoint(runner.work_dir)
        return None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """Check ``checkpoint`` against ``runner.model`` before it loads."""
        state_dict = checkpoint.get('state_dict', checkpoint)
        metadata = getattr(state_dict, '_metadata', None)
        for pattern, repl in REVISE_KEYS:
            state_dict = OrderedDict(
                (re.sub(pattern, repl, k), v) for k, v in state_dict.items())
        if metadata is not None:
            state_dict._metadata = metadata
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        mismatch = state_dict_mismatch(model, state_dict)
        if not any(mismatch.values()):
            return
        report = format_mismatch(mismatch, self.first)
        source = self._source(runner)
        name = type(model).__name__
        if runner._resume:
            raise RuntimeError(
                f'cannot resume {name} from checkpoint {source!r}: it was '
                f'saved from a different model:\n{report}')
        if self.strict:
            raise RuntimeError(
                f'checkpoint {source!r} (load_from) does not match {name}:\n'
                f'{report}\nTo initialise only the matching part on purpose, '
                'set default_hooks.strict_load.strict=False (e.g. '
                '--cfg-options default_hooks.strict_load.strict=False).')
        runner.logger.warning(
            f'checkpoint {source!r} loads partially into {name} '
            f'(default_hooks.strict_load.strict=False):\n{report}')

