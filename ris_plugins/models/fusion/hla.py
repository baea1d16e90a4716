"""HARIS's Human-Like Attention (HLA) block: bidirectional visual-word
attention with a sentence-driven feedback pass."""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS

FEEDBACK_AT = ('visual', 'attention')
FEEDBACK_MODES = ('gate', 'add')
MASK_VALUE = -1e4  # logit of padded words (ris_methods.md 5.3, eq. 1)


def _mlp(in_dims: int, hidden: int, out_dims: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dims, hidden), nn.ReLU(inplace=True),
        nn.Linear(hidden, out_dims))


def _sdpa(query: Tensor, key: Tensor, value: Tensor,
          bias: Optional[Tensor], scale: float) -> Tensor:
    """``softmax(query key^T * scale + bias) value`` through
    ``F.scaled_dot_product_attention``: query (B, N, D), key / value
    (B, M, D), bias broadcastable to (B, N, M) or None -> (B, N, D).

    Under autocast the inputs are cast to the autocast dtype (the fused
    kernel needs one dtype; a residual sum can be float32 there)."""
    device = query.device.type
    dtype = (torch.get_autocast_dtype(device)
             if torch.is_autocast_enabled(device) else query.dtype)
    return F.scaled_dot_product_attention(
        query.to(dtype), key.to(dtype), value.to(dtype),
        attn_mask=None if bias is None else bias.to(dtype), scale=scale)


@MODELS.register_module()
class HLABlock(BaseModule):
    """Human-Like Attention block (HARIS, arXiv 2405.10707; equations as
    reconstructed in ``shared/docs/ris_methods.md`` 5.3 [R]).

    Inputs are visual tokens V (B, C_v, h, w), words W (B, T, C_w) with
    their padding mask (B, T) (True = pad) and the sentence S (B, C_s).
    Each is first projected to the common width D (V by a 1x1 conv, W and
    S by linear maps): v (B, N, D), N = h*w; w (B, T, D); s (B, D).

    1. Attention (eq. 1): ``A = (v Wq)(w Wk)^T / sqrt(D)`` (B, N, T);
       padded words get -1e4.
    2. LWA (eq. 2): ``lwa(x, A) = LN(x + Wo softmax_T(A) (w Wv))``, the
       language-aware visual tokens (residual + layer norm).
       VWA: ``w' = LN(w + Wo' softmax_N(A^T) (v Wv'))``, the vision-aware
       word tokens.
    3. Feedback (eq. 3): ``f = MLP(lwa(v, A) * s)`` (the sentence
       modulates the language-aware tokens), then LWA runs again:

       * ``feedback_at='visual'`` (default): the signal changes the visual
         tokens, ``gate``: ``v~ = sigmoid(f) * v`` (f (B, N, 1));
         ``add`` (default, "the signal is added to the visual tokens"):
         ``v~ = v + f`` (f (B, N, D)); output ``lwa(v~, A(v~))``.
       * ``feedback_at='attention'``: the visual tokens stay v and only the
         second attention changes: ``gate``: the attention probabilities
         are scaled per visual token, ``sigmoid(f) * softmax_T(A)``;
         ``add``: the query is ``(v + f) Wq``.

    The second LWA shares Wq, Wk, Wv, Wo and LN with the first.

    Ablations (HARIS Table "w/o ..."):

    * ``use_feedback=False``: output ``lwa(v, A)`` (plain bidirectional
      attention).
    * ``use_vw=False``: no VWA; the word output is w.
    * ``use_lw=False``: no LWA, so no feedback either (the feedback is a
      second LWA); the visual output is ``LN(v)``.
    * ``replace_with_cross_attn=True``: a standard multi-head
      cross-attention from visual tokens to words replaces the block:
      visual output ``LN(v + MHA(v, w, w))``, word output w.

    Args:
        visual_channels (int): C_v.
        text_channels (int): C_w, word width.
        sent_channels (int): C_s, sentence width.
        embed_dims (int): D.
        feedback_at (str): 'visual' | 'attention' (see above).
        feedback_mode (str): 'gate' | 'add'.
        feedback_ratio (int): The feedback MLP (Linear-ReLU-Linear) has
            D // ``feedback_ratio`` hidden units [R].
        use_feedback (bool): Feedback pass on/off.
        use_vw (bool): Vision-weighted attention on/off.
        use_lw (bool): Language-weighted attention on/off.
        replace_with_cross_attn (bool): Replace HLA by cross-attention.
        num_heads (int): Heads of the replacement cross-attention.
        use_sdpa (bool): Compute every ``softmax(A) (. W)`` product (LWA,
            VWA, feedback) with ``F.scaled_dot_product_attention`` and
            never form A (B, N, T) or its probabilities (default False:
            the explicit products above, as for PWAM's ``use_sdpa``).
            Padded words get the additive -1e4 logit instead of -1e4 as
            the logit, and for VWA their query is zeroed, which gives
            the explicit path's uniform average over the visual tokens;
            with at least one real word per sentence the outputs and
            gradients equal the explicit path's to float rounding
            (``tests/test_models/test_fusion/test_hla.py``). The
            cross-attention replacement is ``nn.MultiheadAttention``
            called with ``need_weights=False``, already SDPA in torch.
            No quantization adapter exists for this block (its products
            stay float under PTQ), so the switch does not change PTQ.
        init_cfg (dict, optional): Initialisation config.

    Raises:
        ValueError: Unknown ``feedback_at`` / ``feedback_mode`` (lists the
            valid ones), ``embed_dims`` not divisible by ``num_heads``
            with ``replace_with_cross_attn``; at forward, inputs whose
            widths do not match the configured ones.
    """

    def __init__(self,
                 visual_channels: int,
                 text_channels: int,
                 sent_channels: int,
                 embed_dims: int = 256,
                 feedback_at: str = 'visual',
                 feedback_mode: str = 'add',
                 feedback_ratio: int = 4,
                 use_feedback: bool = True,
                 use_vw: bool = True,
                 use_lw: bool = True,
                 replace_with_cross_attn: bool = False,
                 num_heads: int = 8,
                 use_sdpa: bool = False,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if feedback_at not in FEEDBACK_AT:
            raise ValueError(f'unknown feedback_at {feedback_at!r}; valid: '
                             f'{FEEDBACK_AT}')
        if feedback_mode not in FEEDBACK_MODES:
            raise ValueError(f'unknown feedback_mode {feedback_mode!r}; '
                             f'valid: {FEEDBACK_MODES}')
        if replace_with_cross_attn and embed_dims % num_heads:
            raise ValueError(f'embed_dims={embed_dims} must be divisible by '
                             f'num_heads={num_heads}')
        self.visual_channels = visual_channels
        self.text_channels = text_channels
        self.sent_channels = sent_channels
        self.embed_dims = embed_dims
        self.use_sdpa = use_sdpa
        self.feedback_at = feedback_at
        self.feedback_mode = feedback_mode
        self.cross_attn_only = replace_with_cross_attn
        self.use_lw = use_lw and not replace_with_cross_attn
        self.use_vw = use_vw and not replace_with_cross_attn
        self.use_feedback = use_feedback and self.use_lw
        d = embed_dims
        self.v_proj = nn.Conv2d(visual_channels, d, 1)
        self.w_proj = nn.Linear(text_channels, d)
        if self.cross_attn_only:
            self.cross_attn = nn.MultiheadAttention(
                d, num_heads, batch_first=True)
            self.v_norm = nn.LayerNorm(d)
            return
        if self.use_lw or self.use_vw:
            self.q = nn.Linear(d, d)  # Wq
            self.k = nn.Linear(d, d)  # Wk
        if self.use_lw:
            self.lw_value = nn.Linear(d, d)  # Wv
            self.lw_out = nn.Linear(d, d)  # Wo
        self.v_norm = nn.LayerNorm(d)
        if self.use_vw:
            self.vw_value = nn.Linear(d, d)  # Wv'
            self.vw_out = nn.Linear(d, d)  # Wo'
            self.w_norm = nn.LayerNorm(d)
        if self.use_feedback:
            self.s_proj = nn.Linear(sent_channels, d)
            out = 1 if feedback_mode == 'gate' else d
            self.feedback = _mlp(d, max(d // feedback_ratio, 1), out)

    @property
    def out_channels(self) -> int:
        """D, width of both outputs."""
        return self.embed_dims

    def drop_word_attention(self) -> None:
        """Remove VWA (``vw_value``, ``vw_out``, ``w_norm``) from a block
        whose vision-aware words nothing reads.

        The visual output is unchanged (VWA only produces the words); the
        word output becomes the projected words w, as with
        ``use_vw=False``. Their keys leave the state dict. A no-op on a
        block without VWA.

        Raises:
            ValueError: The block has no LWA (``use_lw=False``): its words
                were its only text path, so without them nothing of the
                sentence would reach the output.
        """
        if not self.use_vw:
            return
        if not self.use_lw:
            raise ValueError(
                'HLABlock(use_lw=False) reads the text only through its '
                'vision-aware words; with nothing reading them (e.g. '
                'QueryMaskHead(decoder_replaced=True)) the model would '
                'ignore the sentence. Valid: use_lw=True, or a head that '
                'reads the words')
        self.use_vw = False
        del self.vw_value, self.vw_out, self.w_norm

    def _check(self, visual: Tensor, words: Tensor, sent: Tensor) -> None:
        got = (visual.shape[1], words.shape[-1], sent.shape[-1])
        want = (self.visual_channels, self.text_channels, self.sent_channels)
        if got != want:
            raise ValueError(
                f'HLABlock was built for (visual, word, sentence) widths '
                f'{want}, got {got}')

    def attention_logits(self, v: Tensor, w: Tensor,
                         pad_mask: Tensor) -> Tensor:
        """Eq. 1: v (B, N, D), w (B, T, D), pad_mask (B, T) -> A (B, N, T)
        with -1e4 at padded words."""
        a = self.q(v) @ self.k(w).transpose(1, 2)  # (B, N, T)
        a = a / math.sqrt(self.embed_dims)
        return a.masked_fill(pad_mask[:, None, :], MASK_VALUE)

    def lwa(self, x: Tensor, prob: Tensor, w: Tensor) -> Tensor:
        """Eq. 2 (LWA): residual x (B, N, D) + Wo (prob (B, N, T) @ w Wv),
        layer-normed -> (B, N, D)."""
        return self.v_norm(x + self.lw_out(prob @ self.lw_value(w)))

    def vwa(self, logits: Tensor, v: Tensor, w: Tensor) -> Tensor:
        """Eq. 2 (VWA): softmax over the N visual tokens of A^T (B, T, N)
        -> vision-aware words (B, T, D)."""
        prob = logits.transpose(1, 2).softmax(dim=-1)  # (B, T, N)
        return self.w_norm(w + self.vw_out(prob @ self.vw_value(v)))

    def _feedback(self, v: Tensor, v_lang: Tensor, w: Tensor,
                  pad_mask: Tensor, logits: Tensor, s: Tensor) -> Tensor:
        """Eq. 3: the sentence-modulated feedback and the second LWA ->
        (B, N, D)."""
        f = self.feedback(v_lang * s[:, None, :])  # (B, N, 1 | D)
        if self.feedback_at == 'visual':
            v_fb = torch.sigmoid(f) * v if self.feedback_mode == 'gate' \
                else v + f  # (B, N, D)
            prob = self.attention_logits(v_fb, w, pad_mask).softmax(-1)
            return self.lwa(v_fb, prob, w)
        if self.feedback_mode == 'gate':
            prob = torch.sigmoid(f) * logits.softmax(-1)  # (B, N, T)
        else:
            prob = self.attention_logits(v + f, w, pad_mask).softmax(-1)
        return self.lwa(v, prob, w)

    def _fuse_sdpa(self, v: Tensor, w: Tensor, pad_mask: Tensor,
                   sent: Tensor) -> Tuple[Tensor, Tensor]:
        """LWA, VWA and feedback (eq. 1-3) through
        :func:`_sdpa`: v (B, N, D), w (B, T, D), pad_mask (B, T) True at
        padding, sent (B, C_s) -> visual (B, N, D), words (B, T, D)."""
        scale = self.embed_dims**-0.5
        qv, kw = self.q(v), self.k(w)  # (B, N, D), (B, T, D)
        out_w = w
        if self.use_vw:  # A^T: words query the visual tokens
            real = (~pad_mask).unsqueeze(-1).to(kw.dtype)  # (B, T, 1)
            att = _sdpa(kw * real, qv, self.vw_value(v), None, scale)
            out_w = self.w_norm(w + self.vw_out(att))  # (B, T, D)
        if not self.use_lw:
            return self.v_norm(v), out_w
        bias = torch.zeros_like(pad_mask, dtype=qv.dtype).masked_fill(
            pad_mask, MASK_VALUE).unsqueeze(1)  # (B, 1, T)
        value = self.lw_value(w)  # (B, T, D)
        lang = _sdpa(qv, kw, value, bias, scale)  # softmax_T(A) w Wv
        out_v = self.v_norm(v + self.lw_out(lang))  # (B, N, D)
        if not self.use_feedback:
            return out_v, out_w
        f = self.feedback(out_v * self.s_proj(sent)[:, None, :])
        if self.feedback_at == 'visual':
            v_fb = torch.sigmoid(f) * v if self.feedback_mode == 'gate' \
                else v + f  # (B, N, D)
            lang = _sdpa(self.q(v_fb), kw, value, bias, scale)
            return self.v_norm(v_fb + self.lw_out(lang)), out_w
        if self.feedback_mode == 'gate':  # per-token scale of softmax(A)
            lang = torch.sigmoid(f) * lang  # (B, N, D)
        else:
            lang = _sdpa(self.q(v + f), kw, value, bias, scale)
        return self.v_norm(v + self.lw_out(lang)), out_w

    def forward(self, visual: Tensor, words: Tensor, pad_mask: Tensor,
                sent: Tensor) -> Tuple[Tensor, Tensor]:
        """Run the block.

        Args:
            visual (Tensor): (B, C_v, h, w).
            words (Tensor): (B, T, C_w).
            pad_mask (Tensor): (B, T) bool, True at padding.
            sent (Tensor): (B, C_s).

        Returns:
            tuple: language-aware visual tokens (B, D, h, w) and
            vision-aware words (B, T, D).
        """
        self._check(visual, words, sent)
        b, _, h, wd = visual.shape
        v = self.v_proj(visual).flatten(2).transpose(1, 2)  # (B, N, D)
        w = self.w_proj(words)  # (B, T, D)
        if self.cross_attn_only:
            att, _ = self.cross_attn(v, w, w, key_padding_mask=pad_mask,
                                     need_weights=False)  # (B, N, D)
            out_v, out_w = self.v_norm(v + att), w
        elif self.use_sdpa and (self.use_lw or self.use_vw):
            out_v, out_w = self._fuse_sdpa(v, w, pad_mask, sent)
        else:
            logits = (self.attention_logits(v, w, pad_mask)
                      if self.use_lw or self.use_vw else None)  # (B, N, T)
            out_w = self.vwa(logits, v, w) if self.use_vw else w
            if not self.use_lw:
                out_v = self.v_norm(v)
            else:
                out_v = self.lwa(v, logits.softmax(-1), w)  # (B, N, D)
                if self.use_feedback:
                    out_v = self._feedback(v, out_v, w, pad_mask, logits,
                                           self.s_proj(sent))
        out_v = out_v.transpose(1, 2).reshape(b, -1, h, wd)  # (B, D, h, w)
        return out_v, out_w
