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
TRUNCATIONS = ('keep_sep', 'cut')


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
        truncation (str): How a sequence longer than L is shortened:

            * ``'keep_sep'`` (default): keep the first L - 1 tokens and end
              with ``[SEP]`` / EOT (``transformers`` ``truncation=True``;
              mmseg's ``tokenize`` and CRIS for CLIP);
            * ``'cut'``: keep the first L tokens of ``[CLS] ... [SEP]``,
              dropping ``[SEP]`` (LAVT ``data/dataset_refer_bert.py``:
              ``input_ids[:20]``).

            Sequences of at most L tokens are identical under both.

    Raises:
        ValueError: Unknown ``tokenizer`` or ``truncation`` (the message
            lists the valid ones), ``context_length < 2``, or ``'bert'``
            without ``vocab``; from :meth:`transform`, a ``text`` that is
            not a string or is empty / whitespace only (named with its
            ref).
        FileNotFoundError: ``vocab`` cannot be found.
    """

    def __init__(self,
                 tokenizer: str = 'clip',
                 context_length: int = 17,
                 vocab: str = None,
                 lower_case: bool = False,
                 truncation: str = 'keep_sep') -> None:
        if tokenizer not in TOKENIZERS:
            raise ValueError(f'unknown tokenizer {tokenizer!r}; valid: '
                             f'{TOKENIZERS}')
        if truncation not in TRUNCATIONS:
            raise ValueError(f'unknown truncation {truncation!r}; valid: '
                             f'{TRUNCATIONS}')
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
        self.truncation = truncation
        self._warned = False

    def _clip(self, text: str) -> Tuple[np.ndarray, np.ndarray, int]:
        from mmseg.utils import tokenize
        untruncated = tokenize(text, max(77, self.context_length))[0]
        full = int((untruncated != 0).sum())
        if self.truncation == 'cut':
            tokens = untruncated[:self.context_length].numpy()
        else:
            tokens = tokenize(text, self.context_length)[0].numpy()
        return tokens, (tokens != 0).astype(np.int64), full

    def _bert(self, text: str) -> Tuple[np.ndarray, np.ndarray, int]:
        tok = _bert_tokenizer(self.vocab)
        ids = tok(text)['input_ids']
        length = self.context_length
        if self.truncation == 'cut':
            kept = ids[:length]
            tokens = np.full(length, tok.pad_token_id, np.int64)
            tokens[:len(kept)] = kept
            mask = (np.arange(length) < len(kept)).astype(np.int64)
            return tokens, mask, len(ids)
        enc = tok(
            text, max_length=length, padding='max_length', truncation=True)
        return (np.asarray(enc['input_ids'], np.int64),
                np.asarray(enc['attention_mask'], np.int64), len(ids))

    def _warn_truncation(self, text: str, length: int) -> None:
        if not self._warned and length > self.context_length:
            print_log(
                f'TokenizeText: sentences longer than context_length='
                f'{self.context_length} tokens are truncated '
                f'(truncation={self.truncation!r}; first seen: {length} '
                f'tokens, {text!r}); logged once.',
                logger='current')
            self._warned = True

    def transform(self, results: Dict) -> Dict:
        text = results['text']
        if not isinstance(text, str) or not text.strip():
            raise ValueError(
                f'ref {results.get("ref_id")} (sentence '
                f'{results.get("sent_id")}): text must be a non-empty '
                f'string, got {text!r:.40}')
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
                f'truncation={self.truncation!r}, '
                f'vocab={osp.basename(self.vocab or "")!r})')
