"""CLIP's text transformer (as used by CRIS / ETRIS / BarLeRIa) on
``transformers.CLIPTextModelWithProjection``."""
from typing import Optional

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor
from transformers import CLIPTextConfig, CLIPTextModelWithProjection

from mmseg.registry import MODELS
from ris_plugins.utils.pretrained import resolve_pretrained
from ..utils import FrozenEvalMixin, TextFeatures

# OpenAI CLIP text towers (``clip/model.py`` ``build_model``): width 512,
# 12 layers, 8 heads, 77 positions, vocabulary 49,408; the projection width
# is the CLIP embedding width (RN50: 1024, RN101 / ViT-B: 512).
CLIP_EOT = 49407  # <end_of_text> in CLIP's BPE vocabulary
OPENAI_CLIP_TEXT = dict(
    vocab_size=49408,
    hidden_size=512,
    intermediate_size=2048,
    num_hidden_layers=12,
    num_attention_heads=8,
    max_position_embeddings=77,
    hidden_act='quick_gelu',
    layer_norm_eps=1e-5)


@MODELS.register_module()
class RefCLIPTextEncoder(FrozenEvalMixin, BaseModule):
    """CLIP text encoder returning word features and the EOT sentence
    feature, as CRIS's ``CLIP.encode_text`` (``model/clip.py``).

    Registered as ``RefCLIPTextEncoder`` because mmseg already registers an
    unrelated ``CLIPTextEncoder`` (VPD / SAN prompt encoder) in the same
    registry.

    * ``word_feats`` = ``ln_final`` of the last layer, (B, L, C) with
      C = ``hidden_size`` (512), **not** projected;
    * ``sent_feat`` = ``word_feats[b, argmax(ids[b])] @ text_projection``,
      (B, C') with C' = ``projection_dim`` (RN50: 1024, RN101: 512). The
      argmax of the ids is the EOT token (49407, the largest id);
    * ``pad_mask`` = ``ids == 0`` (B, L) (CRIS ``segmenter.py``).

    The text runs with CLIP's causal mask only (no padding mask, as
    upstream); ``transformers`` builds the causal mask L x L for L input
    tokens and uses the first L rows of the positional embedding, which is
    exactly CRIS's ``build_attention_mask(txt_length)`` +
    ``positional_embedding[:L]``. The full 77-row positional table is kept
    so that OpenAI checkpoints load unchanged
    (``tools/model_converters/clip_to_ris.py``).

    Weights are randomly initialised from ``config`` (CLIPTextConfig
    kwargs, e.g. small models in tests; ``projection_dim`` sets C'), or
    loaded from a local Hugging Face folder (``pretrained``) holding a
    ``CLIPModel`` / ``CLIPTextModelWithProjection``. Nothing is downloaded.
    OpenAI RN50 / RN101 text towers have no Hugging Face release: convert
    them with ``tools/model_converters/clip_to_ris.py`` and load through the
    segmentor's ``load_from``.

    Args:
        context_length (int): L, the number of tokens the tokenizer emits
            (``TokenizeText(tokenizer='clip', context_length=L)``; CRIS: 17
            for RefCOCO/+, 22 for G-Ref).
        config (dict, optional): ``CLIPTextConfig`` kwargs; unspecified
            fields default to OpenAI's text tower
            (:data:`OPENAI_CLIP_TEXT`). Used when ``pretrained`` is None.
        pretrained (str, optional): Local folder or ``pkg:<package>`` (see
            :func:`ris_plugins.utils.pretrained.resolve_pretrained`).
        frozen (bool): Freeze every weight and keep the model in eval mode
            (ETRIS / BarLeRIa); CRIS trains it (False).
        init_cfg (dict, optional): Unused; weights come from ``config`` /
            ``pretrained`` / the segmentor's ``load_from``.

    Raises:
        ValueError: Neither ``pretrained`` nor ``config`` given, or
            ``context_length`` outside [2, max_position_embeddings].
        FileNotFoundError: ``pretrained`` cannot be found.
    """

    def __init__(self,
                 context_length: int = 17,
                 config: Optional[dict] = None,
                 pretrained: Optional[str] = None,
                 frozen: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if pretrained is not None:
            self.clip = CLIPTextModelWithProjection.from_pretrained(
                resolve_pretrained(pretrained), local_files_only=True)
        elif config is not None:
            self.clip = CLIPTextModelWithProjection(
                CLIPTextConfig(**{**OPENAI_CLIP_TEXT, **config}))
            # OpenAI's init of text_projection (clip/model.py).
            nn.init.normal_(
                self.clip.text_projection.weight,
                std=self.clip.config.hidden_size**-0.5)
        else:
            raise ValueError('RefCLIPTextEncoder needs pretrained=<folder> or '
                             'config=dict(...) (use config=dict() for '
                             "OpenAI's text tower shape)")
        max_len = self.clip.config.max_position_embeddings
        if not 2 <= context_length <= max_len:
            raise ValueError(
                f'context_length={context_length} is not supported by this '
                f'CLIP text encoder: it has {max_len} positions, so the '
                f'context length must be in [2, {max_len}]')
        self.context_length = context_length
        self.frozen = frozen
        if frozen:
            self.clip.requires_grad_(False)
            self.clip.eval()

    @property
    def vocab_size(self) -> int:
        """Size of the token-embedding table."""
        return self.clip.config.vocab_size

    @property
    def max_length(self) -> int:
        """Longest token sequence L this encoder accepts: its
        ``context_length``."""
        return self.context_length

    @property
    def out_channels(self) -> int:
        """C: width of the word features."""
        return self.clip.config.hidden_size

    @property
    def sent_channels(self) -> int:
        """C': width of the sentence feature (after text_projection)."""
        return self.clip.config.projection_dim

    def init_weights(self) -> None:
        """Keep the ``config`` / ``pretrained`` weights: mmengine must not
        call ``PreTrainedModel.init_weights``, which re-initialises."""
        self._is_init = True

    def frozen_modules(self):
        """The CLIP text model when ``frozen``."""
        return (self.clip, ) if self.frozen else ()

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.dim() != 2:
            raise ValueError(f'tokens must be (B, L), got shape '
                             f'{tuple(tokens.shape)}')
        if tokens.shape[1] > self.context_length:
            raise ValueError(
                f'got {tokens.shape[1]} tokens per sentence but the CLIP '
                f'text encoder was built with context_length='
                f'{self.context_length}; set TokenizeText(context_length=...) '
                f'and RefCLIPTextEncoder(context_length=...) to the same '
                f'value')
        if not (tokens == CLIP_EOT).any(dim=1).all():
            raise ValueError(
                f'a sentence has no CLIP end-of-text token ({CLIP_EOT}): '
                "tokenize with TokenizeText(tokenizer='clip') for a CLIP "
                'text encoder')

    def forward(self,
                tokens: Tensor,
                attention_mask: Optional[Tensor] = None) -> TextFeatures:
        """Encode CLIP-BPE token ids.

        Args:
            tokens (Tensor): (B, L) int64 ids, ``[SOT] ... [EOT] 0 ... 0``,
                L <= ``context_length``.
            attention_mask (Tensor, optional): (B, L), ignored: CLIP's
                causal mask already hides the padding after EOT from every
                real token (CRIS passes no padding mask either), and
                ``pad_mask`` is derived from ``tokens == 0`` as upstream.

        Returns:
            TextFeatures: word_feats (B, L, C), sent_feat (B, C'),
            pad_mask (B, L) bool, True at padding.

        Raises:
            ValueError: ``tokens`` is not 2-D, longer than
                ``context_length``, or a row lacks the EOT token (not CLIP
                BPE, e.g. BERT WordPiece ids).
        """
        self._check_tokens(tokens)
        with torch.set_grad_enabled(torch.is_grad_enabled()
                                    and not self.frozen):
            words = self.clip.text_model(
                input_ids=tokens).last_hidden_state  # (B, L, C), ln_final
            eot = tokens.argmax(dim=-1)  # (B,)
            batch = torch.arange(tokens.shape[0], device=tokens.device)
            sent = self.clip.text_projection(words[batch, eot])  # (B, C')
        return TextFeatures(words, sent, tokens == 0)
