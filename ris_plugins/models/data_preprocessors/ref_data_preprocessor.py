"""Images and sentences to batched tensors on the model's device."""
from typing import Any, Dict

import torch
from torch import Tensor

from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS
from mmseg.utils import SampleList

TEXT_KEYS = ('text_tokens', 'text_mask')


def stack_text(data_samples: SampleList, key: str,
               device: torch.device) -> Tensor:
    """Stack each sample's ``key`` ((L,) int) into (B, L) int64 on
    ``device``.

    Raises:
        ValueError: A sample lacks ``key``, or the lengths differ (the
            message names the key and the lengths).
    """
    missing = [i for i, ds in enumerate(data_samples) if key not in ds]
    if missing:
        raise ValueError(
            f'data samples {missing} have no {key!r}: add TokenizeText to '
            f"the pipeline and list 'text_tokens' and 'text_mask' in "
            'PackSegInputs.meta_keys')
    rows = [torch.as_tensor(ds.get(key)) for ds in data_samples]
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        raise ValueError(f'{key} of one batch must share one length '
                         f'(TokenizeText pads to context_length); got '
                         f'lengths {lengths}')
    return torch.stack(rows).to(device=device, dtype=torch.long)  # (B, L)


@MODELS.register_module()
class RefDataPreProcessor(SegDataPreProcessor):
    """mmseg's :class:`SegDataPreProcessor` (normalise, pad to ``size``,
    stack ``gt_sem_seg``) plus the text: the samples' ``text_tokens`` and
    ``text_mask`` ((L,) each, from ``TokenizeText``) become ``tokens`` and
    ``text_mask`` (B, L) int64 on the images' device, the explicit text
    inputs of :class:`RefSegmentor`.

    Args:
        **kwargs: :class:`SegDataPreProcessor` arguments (``mean``,
            ``std``, ``size``, ``pad_val``, ``seg_pad_val``,
            ``bgr_to_rgb``, ...).

    Returns (``forward``):
        dict: ``inputs`` (B, 3, H, W) float, ``tokens`` (B, L) int64,
        ``text_mask`` (B, L) int64 (1 on real tokens), ``data_samples``.

    Raises:
        ValueError: From ``forward``: no data samples, a sample without
            tokens, or tokens of different lengths in one batch.
    """

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        out = super().forward(data, training)
        samples = out['data_samples']
        if not samples:
            raise ValueError(
                'RefDataPreProcessor needs data_samples holding each '
                "sample's text_tokens / text_mask")
        device = out['inputs'].device
        out['tokens'] = stack_text(samples, 'text_tokens', device)
        out['text_mask'] = stack_text(samples, 'text_mask', device)
        return out
