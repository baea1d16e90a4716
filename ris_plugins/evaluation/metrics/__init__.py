from .refseg_metric import RefSegMetric, summarize

__all__ = ['RefSegMetric', 'summarize']
