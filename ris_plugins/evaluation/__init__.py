from .metrics import RefSegMetric, summarize

__all__ = ['RefSegMetric', 'summarize']
