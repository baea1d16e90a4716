from .metrics import RefSegMetric, summarize
from .val_subset import build_val_subset

__all__ = ['RefSegMetric', 'summarize', 'build_val_subset']
