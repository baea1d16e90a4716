"""BarLeRIa's Local Intertwining Module as prompt tokens
(``NastrondAd/BarLeRIa: model/intertwiner.py`` ``Intertwiner_ViT``)."""
from typing import Optional

import torch.nn as nn
from mmengine.model import BaseModule

from mmseg.registry import MODELS


def _bottleneck(cin: int, hidden: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(cin, hidden), nn.ReLU(), nn.Linear(hidden, cout))


@MODELS.register_module()
class LIMPrompts(BaseModule):
    """Prompt tokens exchanged between the towers before their first block
    (hook point (0, 0) of :class:`DualEncoderBackbone`):

    * text -> vision: ``t2v`` = Lin(C_t, 32) -> ReLU -> Lin(32, C_v) on the
      L embedded text tokens (token + position embedding); the L results
      are inserted after the visual CLS token: [CLS, L prompts, patches].
      The taps and the final map use the patches only.
    * vision -> text (``vision_to_text``): ``v2t`` = Lin(C_v, 32) -> ReLU
      -> Lin(32, C_t) on the visual CLS token (after ``ln_pre``), prepended
      to the text. BarLeRIa releases it switched off, and switching it on
      crashes there because the causal mask, the EOT index and the pad mask
      all still assume L tokens; here the runner builds the causal mask for
      L + 1 tokens, moves the EOT index by one and marks the new token as
      not padding, so the word features (and the decoder's keys) are L + 1
      long, the first being the image token. Note (as released): at hook
      point (0, 0) the CLS token is ``ln_pre(cls_token + pos_embed[0])``,
      which does not depend on the image, so this token is in effect a
      learned text prompt.

    **Padding** (``mask_padding``): the prompts of padding positions (ids
    == 0) are hidden from the visual attention as keys (True, the fix), or
    attended to like any token (False, BarLeRIa as released).

    Sizes at ViT-B/16 + CLIP text: ``t2v`` 41,760, ``v2t`` 41,504
    parameters (``ris_methods.md`` 4.2; 390,656 with SNF = the paper's
    "0.39M"). Init as BarLeRIa: Linear N(0, 0.02), zero bias.

    Args:
        visual_dim (int): C_v (ViT-B: 768).
        text_dim (int): C_t (CLIP text: 512).
        hidden_dim (int): Bottleneck width (BarLeRIa: 32).
        text_to_vision (bool): Use the text -> vision prompts.
        vision_to_text (bool): Use the vision -> text token.
        mask_padding (bool): Mask the prompts of padding tokens.
        init_cfg (dict, optional): Initialisation config.

    Raises:
        ValueError: Both directions off; at forward, tower widths that
            differ from ``visual_dim`` / ``text_dim`` (both named), or a
            call at any step other than 0.
    """

    num_stages = 1

    def __init__(self,
                 visual_dim: int = 768,
                 text_dim: int = 512,
                 hidden_dim: int = 32,
                 text_to_vision: bool = True,
                 vision_to_text: bool = False,
                 mask_padding: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if not (text_to_vision or vision_to_text):
            raise ValueError('LIMPrompts needs text_to_vision and/or '
                             'vision_to_text')
        self.visual_dim = visual_dim
        self.text_dim = text_dim
        self.mask_padding = mask_padding
        self.t2v = (_bottleneck(text_dim, hidden_dim, visual_dim)
                    if text_to_vision else None)
        self.v2t = (_bottleneck(visual_dim, hidden_dim, text_dim)
                    if vision_to_text else None)
        self._barleria_init()

    def _barleria_init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.02)
                nn.init.zeros_(m.bias)

    def init_weights(self) -> None:
        """BarLeRIa's init unless ``init_cfg`` is given."""
        if self.init_cfg is not None:
            super().init_weights()
        else:
            self._barleria_init()
            self._is_init = True

    def forward_state(self, state, step: int) -> None:
        """Add the prompts to a :class:`DualEncoderState` in place (vis (B,
        N_v, C_v), txt (B, L, C_t))."""
        if step != 0:
            raise ValueError(f'LIMPrompts has one hook point; got step '
                             f'{step}')
        if (state.vis.shape[-1] != self.visual_dim
                or state.txt.shape[-1] != self.text_dim):
            raise ValueError(
                f'LIMPrompts was built for visual width {self.visual_dim} '
                f'and text width {self.text_dim}, got {state.vis.shape[-1]} '
                f'and {state.txt.shape[-1]}')
        cls = state.vis[:, :1]  # (B, 1, C_v), after ln_pre
        text_pad = state.pad_mask  # (B, L)
        if self.t2v is not None:
            prompts = self.t2v(state.txt)  # (B, L, C_v)
            state.prepend_visual(
                prompts, text_pad if self.mask_padding else None)
        if self.v2t is not None:
            state.prepend_text(self.v2t(cls))  # (B, 1, C_t)
