"""Config-level LoRA for any registered module, on top of mmpretrain's
``LoRAModel`` / ``LoRALinear``."""
import re
from typing import Dict, List, Sequence, Union

import torch.nn as nn
from mmengine.model import BaseModule
from mmpretrain.models.peft import LoRAModel

from mmseg.registry import MODELS


@MODELS.register_module()
class LoRA(LoRAModel):
    """Wrap a module so that chosen ``nn.Linear`` layers get LoRA
    (Hu et al., ICLR 2022) and everything else is frozen::

        y = W0 x + up(down(dropout(x))) * alpha / rank

    with ``down`` Kaiming-uniform and ``up`` zero-initialised, so the
    wrapped module computes exactly the original function at init.

    Usable wherever a module config goes, e.g. in a segmentor config::

        text_encoder=dict(
            type='LoRA',
            module=dict(type='RefCLIPTextEncoder', ...),
            rank=8, alpha=16,
            targets=[dict(type=r'.*self_attn\\.(q|v)_proj')])

    Reuses mmpretrain 1.2.0 ``mmpretrain/models/peft/lora.py``
    (``LoRAModel.apply_lora``: a Linear is wrapped when its dotted name
    **full-matches** the regex ``type`` or **ends with** it, per-target
    ``alpha`` / ``rank`` / ``drop_rate`` override the defaults;
    ``LoRALinear``; ``_set_lora_trainable``; attribute fall-through to the
    wrapped module). Differences from ``LoRAModel``, all deliberate:

    * ``module`` is built from **mmseg's** ``MODELS`` (ours), or may be an
      already built ``nn.Module``;
    * every target pattern must match at least one Linear; otherwise a
      ``ValueError`` names the pattern and lists some Linear names
      (``LoRAModel`` only fails when *no* pattern matches);
    * the state dict keeps **all** weights (frozen base + LoRA).
      ``LoRAModel``'s hook keeps only ``.lora_`` keys of the whole
      ``destination`` dict, which would drop the weights of every module
      saved before it when the wrapper sits inside a segmentor.

    Note: the suffix rule means ``'proj'`` also matches ``c_proj`` /
    ``out_proj``; anchor with a regex (``r'.*\\.q_proj'``) when that
    matters. ``nn.MultiheadAttention`` cannot be wrapped (it reads its
    projection weights directly); HF CLIP / BERT attention uses plain
    Linear layers and can.

    Args:
        module (dict | nn.Module): Config (mmseg ``MODELS``) or module.
        alpha (float): LoRA scale numerator. Defaults to 1.
        rank (int): LoRA rank (> 0). Defaults to 4.
        drop_rate (float): Dropout on the LoRA input. Defaults to 0.
        targets (list[dict]): ``dict(type=<regex or suffix>, [alpha],
            [rank], [drop_rate])``; at least one.

    Raises:
        ValueError: no targets, ``rank`` < 1, a target matching no
            ``nn.Linear`` (matches of other types are named), or a module
            built with ``frozen=True`` (our text encoders then run without
            gradients).
    """

    def __init__(self,
                 module: Union[dict, nn.Module],
                 alpha: float = 1,
                 rank: int = 4,
                 drop_rate: float = 0.,
                 targets: Sequence[dict] = ()) -> None:
        BaseModule.__init__(self)  # LoRAModel.__init__ builds via mmpretrain
        if isinstance(module, dict):
            module = MODELS.build(module)
        if getattr(module, 'frozen', False):
            # Our encoders run their forward without grad when frozen.
            raise ValueError(
                f'LoRA got a {type(module).__name__} with frozen=True, '
                f'whose forward runs without gradients, so the LoRA '
                f'weights would never train; set frozen=False (LoRA '
                f'freezes the base weights itself)')
        if hasattr(module, 'init_weights'):
            # Before wrapping, as LoRAModel: a later init_weights() that
            # loads by parameter name would miss `.original_layer.` keys.
            module.init_weights()
        self.module = module
        self.alpha, self.rank, self.drop_rate = alpha, rank, drop_rate
        self.targets = [dict(t) for t in targets]
        self._check_targets()
        self.applied = False
        self.apply_lora()
        self._set_lora_trainable()
        # No LoRAModel._register_state_dict_hooks: full state dict kept.

    def _matches(self, pattern: str) -> Dict[str, nn.Module]:
        """Sub-modules selected by ``pattern`` under LoRAModel's rule."""
        return {
            name: m
            for name, m in self.module.named_modules()
            if name and (re.fullmatch(pattern, name) or name.endswith(pattern))
        }

    def _check_targets(self) -> None:
        if not self.targets:
            raise ValueError('LoRA needs at least one target, e.g. '
                             "targets=[dict(type='.*q_proj')]")
        linears: List[str] = [
            n for n, m in self.module.named_modules()
            if isinstance(m, nn.Linear)
        ]
        for target in self.targets:
            if 'type' not in target:
                raise ValueError(f'LoRA target {target} has no `type` '
                                 f'(regex or name suffix)')
            rank = target.get('rank', self.rank)
            if int(rank) < 1:
                raise ValueError(f'LoRA rank must be >= 1, got {rank} for '
                                 f"target {target['type']!r}")
            hits = self._matches(target['type'])
            if any(isinstance(m, nn.Linear) for m in hits.values()):
                continue
            others = ', '.join(f'{n} ({type(m).__name__})'
                               for n, m in list(hits.items())[:5])
            raise ValueError(
                f"LoRA target {target['type']!r} matches no nn.Linear in "
                f'{type(self.module).__name__}' +
                (f'; it matches only non-Linear modules: {others}'
                 if others else '') +
                f'. {len(linears)} Linear layers, e.g. {linears[:8]}')
