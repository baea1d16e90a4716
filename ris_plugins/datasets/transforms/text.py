"""Text tokenization as a pipeline step.

Two tokenizers cover the RIS literature:

* CLIP BPE (CRIS, ETRIS, BarLeRIa): mmseg's bundled offline tokenizer
  (``mmseg.utils.tokenize``): ``[SOT 49406] + BPE + [EOT 49407]``, zero
  padded, and on truncation the last token is forced to EOT.
* BERT WordPiece (LAVT, and the baseline's MiniLM): ``transformers``'
  ``BertTokenizerFast`` loaded from a local folder: ``[CLS] ... [SEP]``,
  padded to ``max_length``, with an attention mask.
"""
import os.path as osp
from functools import lru_cache
from typing import Dict, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from mmseg.registry import TRANSFORMS
from ris_plugins.utils.pretrained import resolve_pretrained

TOKENIZERS = ('clip', 'bert')


@lru_cache(maxsize=4)
def _bert_tokenizer(folder: str):
    from transformers import BertTokenizerFast
    return BertTokenizerFast.from_pretrained(folder, local_files_only=True)


@TRANSFORMS.register_module()
class TokenizeText(BaseTransform):
    """Tokenize ``results['text']`` for the model's text encoder.

    Added keys:

    * ``text_tokens``: (L,) int64 token ids, ``L = context_length``;
    * ``text_mask``: (L,) int64, 1 on real tokens and 0 on padding.

    Args:
        tokenizer (str): ``'clip'`` or ``'bert'``.
        context_length (int): L: CLIP context length (17 for RefCOCO/+ and 22
            for G-Ref in CRIS) or BERT ``max_length`` (20 in LAVT).
        vocab (str, optional): For ``'bert'``: a local folder with
            ``vocab.txt`` / ``tokenizer.json``, or an installed package that
            ships one (see :func:`resolve_pretrained`).
        lower_case (bool): Lower-case the sentence first (CLIP BPE
            lower-cases anyway).

    Raises:
        ValueError: Unknown ``tokenizer``, ``context_length < 2``, or
            ``'bert'`` without ``vocab``.
        FileNotFoundError: ``vocab`` cannot be found.
    """

    def __init__(self,
                 tokenizer: str = 'clip',
                 context_length: int = 17,
                 vocab: str = None,
                 lower_case: bool = False) -> None:
        if tokenizer not in TOKENIZERS:
            raise ValueError(f'unknown tokenizer {tokenizer!r}; valid: '
                             f'{TOKENIZERS}')
        if context_length < 2:
            raise ValueError(f'context_length must be >= 2, got '
                             f'{context_length}')
        if tokenizer == 'bert' and not vocab:
            raise ValueError("tokenizer='bert' needs vocab=<folder or "
                             'package>')
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.vocab = resolve_pretrained(vocab) if vocab else None
        self.lower_case = lower_case
        self._warned = False

    def _clip(self, text: str) -> Tuple[np.ndarray, np.ndarray, int]:
        from mmseg.utils import tokenize
        full = int((tokenize(text, 77)[0] != 0).sum())
        tokens = tokenize(text, self.context_length)[0].numpy()
        return tokens, (tokens != 0).astype(np.int64), full

    def _bert(self, text: str) -> Tuple[np.ndarray, np.ndarray, int]:
        tok = _bert_tokenizer(self.vocab)
        full = len(tok(text)['input_ids'])
        enc = tok(
            text,
            max_length=self.context_length,
            padding='max_length',
            truncation=True)
        return (np.asarray(enc['input_ids'], np.int64),
                np.asarray(enc['attention_mask'], np.int64), full)

    def _warn_truncation(self, text: str, length: int) -> None:
        if not self._warned and length > self.context_length:
            print_log(
                f'TokenizeText: sentences longer than context_length='
                f'{self.context_length} tokens are truncated (first seen: '
                f'{length} tokens, {text!r}); logged once.',
                logger='current')
            self._warned = True

    def transform(self, results: Dict) -> Dict:
        text = results['text']
        if self.lower_case:
            text = text.lower()
        tokens, mask, length = (self._clip if self.tokenizer == 'clip'
                                else self._bert)(text)
        self._warn_truncation(text, length)
        results['text_tokens'] = tokens.astype(np.int64)
        results['text_mask'] = mask
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(tokenizer={self.tokenizer!r}, '
                f'context_length={self.context_length}, '
                f'vocab={osp.basename(self.vocab or "")!r})')
