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
from typing import Dict, List, Tuple

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

    @property
    def vocab_size(self) -> int:
        """Number of token ids this tokenizer can emit (CLIP BPE: 49,408;
        WordPiece: its vocabulary with added tokens)."""
        if self.tokenizer == 'clip':
            from mmseg.utils.tokenizer import _tokenizer
            return len(_tokenizer.encoder)
        return len(_bert_tokenizer(self.vocab))

    def _ids(self, text: str) -> Tuple[List[int], int]:
        """All ids of ``text`` with its start / end tokens, untruncated
        (CLIP: at most 77, as mmseg's ``tokenize``), and the end token."""
        if self.tokenizer == 'clip':
            from mmseg.utils import tokenize
            row = tokenize(text, max(77, self.context_length))[0]
            end = int(row.max())  # EOT = 49407, the largest id
            return row[:int((row == end).nonzero()[0]) + 1].tolist(), end
        tok = _bert_tokenizer(self.vocab)
        return tok(text)['input_ids'], tok.sep_token_id

    def _truncate(self, ids: List[int], end: int) -> List[int]:
        """At most ``context_length`` ids by ``truncation`` (see class
        doc)."""
        if len(ids) <= self.context_length:
            return ids
        kept = ids[:self.context_length]
        if self.truncation == 'keep_sep':
            kept[-1] = end
        return kept

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
        ids, end = self._ids(text)
        self._warn_truncation(text, len(ids))
        kept = self._truncate(ids, end)
        tokens = np.zeros(self.context_length, np.int64)  # pad id 0
        tokens[:len(kept)] = kept
        # CLIP marks every id 0 as padding, as CRIS does (text == 0).
        mask = ((tokens != 0) if self.tokenizer == 'clip' else
                (np.arange(self.context_length) < len(kept)))
        results['text_tokens'] = tokens.astype(np.int64)
        results['text_mask'] = mask.astype(np.int64)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(tokenizer={self.tokenizer!r}, '
                f'context_length={self.context_length}, '
                f'truncation={self.truncation!r}, '
                f'vocab={osp.basename(self.vocab or "")!r})')
