"""A per-sentence cache of a frozen text encoder's outputs for training."""
from collections import OrderedDict
from typing import Callable, List, Tuple

import torch
from torch import Tensor

from .text_features import TextFeatures

Entry = Tuple[Tensor, Tensor, Tensor]  # words (L, C), sent (C',), pad (L,)


class TextFeatureCache:
    """Remember the :class:`TextFeatures` of each tokenized sentence.

    A frozen text encoder in eval mode is a fixed function of ``(tokens,
    mask)``, so a sentence seen in an earlier training step need not be
    encoded again: its row of :class:`TextFeatures` is looked up by the
    bytes of its token and mask rows. A sentence not cached yet is encoded
    alone (batch 1), so its features never depend on the rest of its batch
    and a resumed run looks up the same values as the uninterrupted one;
    they equal the batched encoder's to float rounding (about 1e-7
    relative). It encodes in float32 even inside autocast (mixed-precision
    training, e.g. ``CPUAmpOptimWrapper``): each sentence is encoded once,
    so this costs nothing, and training then reads the same sentence
    features as float32 evaluation (bfloat16 text features blurred the
    one-word differences between RefShapes sentences). The cache keeps at
    most ``max_entries`` sentences, dropping the least recently used.

    Used by :class:`RefSegmentor` (``text_cache_size``) while training; it
    is cleared whenever the model changes mode or loads a state dict, so
    evaluation, quantization and export always run the encoder.

    Args:
        max_entries (int): Sentences kept (> 0). A RefShapes sentence of 20
            tokens with MiniLM (C = 384) takes 31 KiB.

    Raises:
        ValueError: ``max_entries`` < 1.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(
                f'text cache max_entries must be >= 1, got {max_entries}')
        self.max_entries = max_entries
        self._entries: 'OrderedDict[bytes, Entry]' = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every sentence."""
        self._entries.clear()

    @staticmethod
    def _key(tokens: Tensor, mask: Tensor) -> bytes:
        """Bytes of one (L,) token row and its (L,) mask row."""
        return (tokens.cpu().numpy().tobytes() + b'|' +
                mask.cpu().numpy().tobytes())

    def __call__(self, encode: Callable[[Tensor, Tensor], TextFeatures],
                 tokens: Tensor, mask: Tensor) -> TextFeatures:
        """Text features of (B, L) ``tokens`` / ``mask``, encoding only the
        sentences not cached yet with ``encode`` (the frozen encoder).

        Returns:
            TextFeatures: word_feats (B, L, C), sent_feat (B, C'),
            pad_mask (B, L), on the device of ``tokens``.
        """
        keys = [self._key(t, m) for t, m in zip(tokens, mask)]
        missing = [i for i, k in enumerate(keys) if k not in self._entries]
        # float32 even inside autocast: once per sentence, so it costs
        # nothing, and training reads the features evaluation reads
        with torch.autocast(tokens.device.type, enabled=False):
            for i in missing:  # alone: a row never depends on its batch
                if keys[i] not in self._entries:  # a repeat in this batch
                    fresh = encode(tokens[i:i + 1], mask[i:i + 1])
                    self._store(keys[i],
                                tuple(f[0].detach() for f in fresh))
        rows: List[Entry] = []
        for k in keys:
            self._entries.move_to_end(k)
            rows.append(self._entries[k])
        return TextFeatures(*(torch.stack(f).to(tokens.device)
                              for f in zip(*rows)))

    def _store(self, key: bytes, entry: Entry) -> None:
        self._entries[key] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
