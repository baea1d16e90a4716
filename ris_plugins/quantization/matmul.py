"""``MatMul`` lives with the models (``ris_plugins/models/utils/matmul.py``:
the models must not depend on quantization); re-exported here for the
attention adapters and for code that imports it from this package."""
from ris_plugins.models.utils.matmul import MatMul

__all__ = ['MatMul']
