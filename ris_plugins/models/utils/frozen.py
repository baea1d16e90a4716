"""``train()`` for modules that hold frozen parts."""
from typing import Iterable

import torch.nn as nn


class FrozenEvalMixin:
    """Keep frozen sub-modules in eval mode and return ``self`` from
    ``train()``.

    ``nn.Module.train`` would switch a frozen encoder's dropout and BN back
    to training mode, and mmpretrain's ``BaseBackbone.train`` returns None,
    which breaks ``model.eval()`` chains. A class lists its frozen parts in
    :meth:`frozen_modules` (``self`` included when the whole module is
    frozen); they are put in eval mode with ``nn.Module.train(m, False)``,
    which does not re-enter an overridden ``train``.

    Mix in before the ``nn.Module`` base, e.g.
    ``class SAMViT(FrozenEvalMixin, ViTSAM)``.
    """

    def frozen_modules(self) -> Iterable[nn.Module]:
        """Modules that stay in eval mode; none by default."""
        return ()

    def train(self, mode: bool = True):
        """Set ``mode`` on every sub-module except the frozen ones (always
        eval); returns ``self``."""
        super().train(mode)
        for module in self.frozen_modules():
            nn.Module.train(module, False)
        return self
