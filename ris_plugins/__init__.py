"""ris_plugins: Referring Image Segmentation for MMSegmentation 1.x.

Importing the package registers every component into mmseg's registries
and makes mmengine checkpoints load safely with ``weights_only=True``
(see :mod:`ris_plugins.utils.safe_checkpoint`).
"""
from .utils import safe_checkpoint
from .version import __version__

safe_checkpoint.install()

from . import (datasets, engine, evaluation, models,  # noqa: E402,F401
               quantization, visualization)
from . import apis  # noqa: E402,F401
from .apis import RefSegInferencer  # noqa: E402

__all__ = ['__version__', 'RefSegInferencer']
