"""A frozen CLIP visual tower (ViT or ResNet) and CLIP text tower run layer
by layer, together, with adapters called at named hook points (ETRIS,
BarLeRIa). This module is the runner: hook points, validation, freezing
and the forward loop; stepping each tower is in ``_dual_encoder/``."""
from typing import List, Optional, Sequence, Tuple

import torch.nn as nn
from mmengine.model import BaseModule
from torch import Tensor

from mmseg.registry import MODELS
from ..utils import FrozenEvalMixin
from ._dual_encoder.resnet_tower import ResNetTower
from ._dual_encoder.state import DualEncoderOutput, DualEncoderState
from ._dual_encoder.text_tower import (check_text_tower, embed_text,
                                       run_text_block, text_features)
from ._dual_encoder.vit_tower import ViTTower
from .clip_resnet import CLIPResNet
from .clip_vit import CLIPViT

__all__ = ['DualEncoderBackbone', 'DualEncoderOutput', 'DualEncoderState']

# Visual tower class -> its driver (``_dual_encoder/__init__.py``).
VISUAL_DRIVERS = ((CLIPViT, ViTTower), (CLIPResNet, ResNetTower))


def _pairs(after) -> List[Tuple[int, int]]:
    """``after`` = (v, t) or a list of them -> list of (v, t)."""
    if (isinstance(after, (tuple, list)) and len(after) == 2
            and all(isinstance(a, int) for a in after)):
        return [tuple(after)]
    return [tuple(a) for a in after]


@MODELS.register_module()
class DualEncoderBackbone(FrozenEvalMixin, BaseModule):
    """Frozen CLIP visual and text towers run block by block, together,
    with adapters at named hook points: one mechanism for ETRIS's Bridgers
    (``kkakkkka/ETRIS: model/bridger.py`` ``Bridger_ViT``, ``Bridger_RN``)
    and BarLeRIa's SNF / LIM / GST (``NastrondAd/BarLeRIa:
    model/intertwiner.py``, ``snf.py``, ``model/segmenter.py``);
    ``shared/docs/ris_methods.md`` 3, 4. The towers stay the library
    modules (:class:`CLIPViT` on mmpretrain or :class:`CLIPResNet` on
    mmpretrain's ``ModifiedResNet``, and :class:`RefCLIPTextEncoder` on
    ``transformers``); nothing of CLIP is copied. Stepping each tower one
    block at a time is in ``_dual_encoder/`` (``vit_tower.py``,
    ``resnet_tower.py``, ``text_tower.py``).

    **ResNet visual tower** (ETRIS RN50 / RN101, ``ris_methods.md`` 3.3):
    the stem and ``layer1`` are the "embedding" (visual block 0, (B, 4w,
    H/4, W/4)); visual blocks 1, 2, 3 are ``layer2``, ``layer3``,
    ``layer4`` ((B, 8w, H/8, W/8), (B, 16w, H/16, W/16), (B, 32w, H/32,
    W/32)); adapters get and return the map itself; the final map is
    ``attnpool`` (CRIS's dense pool with ``connect``) of the ``layer4`` map
    after the adapters there, (B, output_dim, H/32, W/32). ETRIS hooks its
    Bridger at (1, 4), (2, 8), (3, 12) and taps blocks (1, 2): RN50 at 416
    gives 512 x 52^2, 1024 x 26^2 and 1024 x 13^2. Shortcut modules, side
    networks and token-editing modules (``forward_state``) need a ViT.

    **Hook points.** ``(v, t)`` means "after visual block v and text block
    t" (1-based; 0 = after the embeddings: patch embedding + CLS +
    positions + ``ln_pre`` / token + position embedding). Each interaction
    is ``dict(after=(v, t) or [(v, t), ...], module=<cfg>)``; the hook
    points of all interactions are visited in sorted order, each tower is
    advanced to the point's block, and the module is called with its step
    k (index into its own ``after`` list):

    * a module with ``forward_state(state, k)`` gets the
      :class:`DualEncoderState` and edits it (prompt tokens, LIM);
    * any other module (Bridgers) is called ``vis, txt, carry = module(k,
      vis, txt, pad_mask=pad_mask, prev=carry)`` with the visual map (B,
      C_v, h, w) (ViT patch tokens, CLS and prompts excluded), the text
      (B, L', C_t) and its pad mask (B, L'); ``vis`` and ``txt`` are
      written back and ``carry`` (None at step 0) is handed to the
      module's next step (ETRIS's ladder).

    **Shortcuts** (optional, e.g. :class:`SNF`): a module with
    ``shortcuts(tower, i) -> (s1, s2)`` (tower 'visual' / 'text', 0-based
    block i; ``None`` keeps the block unchanged) replacing the block's two
    identity shortcuts.

    **Side network** (optional, e.g. ``GSTSideNet``): called after both
    towers as ``out, aux = side_net(img, clip_feats, words, pad_mask)``
    with ``clip_feats`` = {1-based visual block: (B, h * w, C_v) patch
    tokens} for the blocks in its ``clip_blocks`` (or ``side_taps``), the
    final words (B, L', C_t) and pad mask; ``out`` (B, D_s, h, w) is appended to
    the visual levels and ``aux * side_loss_weight`` is returned as
    ``losses['loss_side']``.

    **Outputs** (:class:`DualEncoderOutput`): the patch maps after the
    ``visual_taps`` blocks (after the adapters hooked there), the final map
    ``ln_post(patches) @ proj`` (B, D, h, w) (ResNet: ``attnpool``), then
    the side output; text as :class:`RefCLIPTextEncoder` (``ln_final``
    words, EOT @ ``text_projection``, pad mask), prepended text tokens
    included.

    **Freezing.** Both towers get ``requires_grad=False`` except parameters
    whose names contain a ``trainable`` entry (ETRIS / BarLeRIa: the two
    positional embeddings; ResNet: ``attnpool.positional_embedding``), and
    stay in eval mode in ``train()`` (no dropout; the ResNet's BatchNorm
    running statistics, ``connect``'s included, never change). Gradients
    still flow *through* the towers to adapters inside them. Adapters,
    shortcuts and the side network train normally.

    ``RefSegmentor`` sees ``text_input = 'tokens'`` and calls
    ``backbone(img, tokens, mask)`` instead of running a text encoder.

    Args:
        visual (dict): Visual tower config (``CLIPViT`` or
            ``CLIPResNet``).
        text (dict): Text tower config (``RefCLIPTextEncoder``).
        interactions (Sequence[dict]): ``dict(after=..., module=...)``.
        shortcuts (dict, optional): Shortcut module config (``SNF``).
        side_net (dict, optional): Side network config (``GSTSideNet``).
        visual_taps (Sequence[int]): 1-based visual blocks whose patch maps
            are returned before the final map (ETRIS: ViT (4, 8), ResNet
            (1, 2)).
        side_taps (Sequence[int], optional): 1-based blocks fed to the side
            network when it has no ``clip_blocks``.
        side_loss_weight (float): Weight of the side network's auxiliary
            loss (BarLeRIa: 1).
        trainable (Sequence[str]): Substrings of tower parameter names that
            stay trainable.
        init_cfg (dict, optional): Initialisation config.

    Raises:
        TypeError: The visual tower is neither a :class:`CLIPViT` nor a
            :class:`CLIPResNet`, or the text tower has no ``transformers``
            CLIP text model.
        ValueError: A hook point or tap outside the towers (the message
            lists the valid range), hook points that go backwards in one
            tower, a module whose number of hook points does not match its
            ``num_stages``, a ``trainable`` entry that matches nothing,
            adapter / shortcut / side widths that do not match the towers
            (both numbers named), or shortcuts, a side network or a
            ``forward_state`` module with a ResNet tower.
    """

    text_input = 'tokens'  # RefSegmentor calls backbone(img, tokens, mask)

    def __init__(self,
                 visual: dict,
                 text: dict,
                 interactions: Sequence[dict] = (),
                 shortcuts: Optional[dict] = None,
                 side_net: Optional[dict] = None,
                 visual_taps: Sequence[int] = (),
                 side_taps: Optional[Sequence[int]] = None,
                 side_loss_weight: float = 1.0,
                 trainable: Sequence[str] = ('pos_embed',
                                             'position_embedding'),
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.visual = MODELS.build(visual)
        self.text = MODELS.build(text)
        drivers = [
            d for cls, d in VISUAL_DRIVERS if isinstance(self.visual, cls)
        ]
        if not drivers:
            raise TypeError(f'DualEncoderBackbone needs a CLIPViT or '
                            f'CLIPResNet visual tower, got '
                            f'{type(self.visual).__name__}')
        check_text_tower(self.text)
        self._tower = drivers[0]
        self.is_resnet = self._tower is ResNetTower
        if self.is_resnet:
            self._check_vit_only(shortcuts, side_net)
        # Width after visual block 0 (embedding) .. N; token width (ViT).
        self.visual_widths = self._tower.widths(self.visual)
        self.visual_dim = None if self.is_resnet else self.visual.embed_dims
        self.num_visual = len(self.visual_widths) - 1
        self.num_text = len(self.text.clip.text_model.encoder.layers)
        self.text_dim = self.text.clip.config.hidden_size
        self.visual_taps = tuple(visual_taps)
        for v in self.visual_taps:
            self._check_block('visual_taps', v, self.num_visual, low=1)
        self._build_interactions(interactions)
        self.shortcut_module = None
        if shortcuts is not None:
            self.shortcut_module = MODELS.build(shortcuts)
            check = getattr(self.shortcut_module, 'check_towers', None)
            if check is not None:
                check(self.num_visual, self.visual_dim, self.num_text,
                      self.text_dim)
        self.side_net = None
        self.side_taps: Tuple[int, ...] = ()
        if side_net is not None:
            self._build_side_net(side_net, side_taps)
        self.side_loss_weight = side_loss_weight
        self._freeze(trainable)

    # ---------------------------------------------------------------- build
    @staticmethod
    def _check_vit_only(shortcuts: Optional[dict],
                        side_net: Optional[dict]) -> None:
        """Shortcuts and side networks work on token blocks (ViT only)."""
        for name, cfg in (('shortcuts', shortcuts), ('side_net', side_net)):
            if cfg is not None:
                raise ValueError(
                    f'{name} ({cfg.get("type")}) needs a CLIPViT visual '
                    f'tower (token blocks); this one is a CLIPResNet')

    @staticmethod
    def _check_block(what: str, index: int, depth: int, low: int = 0):
        if not low <= index <= depth:
            raise ValueError(
                f'{what}: block {index} does not exist; this tower has '
                f'{depth} blocks, valid hook points are {low}..{depth}')

    def _build_side_net(self, cfg: dict,
                        side_taps: Optional[Sequence[int]]) -> None:
        """Build the side network, its taps and check its widths."""
        self.side_net = MODELS.build(cfg)
        taps = getattr(self.side_net, 'clip_blocks', None) or side_taps
        if not taps:
            raise ValueError('side_net has no clip_blocks: give '
                             'side_taps (1-based visual blocks)')
        for v in taps:
            self._check_block('side_net taps', v, self.num_visual, low=1)
        self.side_taps = tuple(taps)
        for attr, expected in (('clip_dim', self.visual_dim), ('text_dim',
                                                               self.text_dim)):
            got = getattr(self.side_net, attr, None)
            if got is not None and got != expected:
                raise ValueError(f'side_net.{attr}={got} does not match '
                                 f'the encoder width {expected}')

    def _check_module_widths(self, module: nn.Module,
                             points: List[Tuple[int, int]]) -> None:
        """Compare an adapter's declared widths with the towers' at its
        hook points: ``visual_dim`` (one width) or ``vis_dims`` (one per
        step), ``text_dim`` / ``txt_dim``."""
        name = type(module).__name__
        for attr in ('text_dim', 'txt_dim'):
            got = getattr(module, attr, None)
            if isinstance(got, int) and got != self.text_dim:
                raise ValueError(f'{name}.{attr}={got} does not match the '
                                 f'text tower width {self.text_dim}')
        single = getattr(module, 'visual_dim', None)
        per_step = getattr(module, 'vis_dims', None)
        for k, (v, t) in enumerate(points):
            if isinstance(single, int):
                attr, got = 'visual_dim', single
            elif per_step is not None and k < len(per_step):
                attr, got = f'vis_dims[{k}]', per_step[k]
            else:
                continue
            width = self.visual_widths[v]
            if got != width:
                raise ValueError(
                    f'{name}.{attr}={got} does not match the visual tower '
                    f'width {width} at hook point ({v}, {t})')

    def _build_interactions(self, interactions: Sequence[dict]) -> None:
        self.interactions = nn.ModuleList()
        hooks = []  # (v, t, module index, step)
        for m, spec in enumerate(interactions):
            if set(spec) != {'after', 'module'}:
                raise ValueError(f'interaction {m} must be dict(after=..., '
                                 f'module=...), got keys {sorted(spec)}')
            module = MODELS.build(spec['module'])
            name = type(module).__name__
            points = _pairs(spec['after'])
            if self.is_resnet and hasattr(module, 'forward_state'):
                raise ValueError(
                    f'{name} edits the token sequences (forward_state) and '
                    f'needs a CLIPViT visual tower; this one is a '
                    f'CLIPResNet')
            stages = getattr(module, 'num_stages', None)
            if stages is not None and stages != len(points):
                raise ValueError(
                    f'{name} has num_stages={stages} but is hooked at '
                    f'{len(points)} points {points}')
            for k, (v, t) in enumerate(points):
                self._check_block(f'{name} hook ({v}, {t}) visual', v,
                                  self.num_visual)
                self._check_block(f'{name} hook ({v}, {t}) text', t,
                                  self.num_text)
                hooks.append((v, t, m, k))
            self._check_module_widths(module, points)
            self.interactions.append(module)
        hooks.sort()
        for (v0, t0, *_), (v1, t1, *_) in zip(hooks, hooks[1:]):
            if t1 < t0:
                raise ValueError(
                    f'hook points must not go back in either tower: '
                    f'({v0}, {t0}) is followed by ({v1}, {t1})')
        self.hooks = hooks

    def _freeze(self, trainable: Sequence[str]) -> None:
        self.visual.requires_grad_(False)
        self.text.requires_grad_(False)
        towers = list(self.visual.named_parameters('visual')) + list(
            self.text.named_parameters('text'))
        for key in trainable:
            hits = [p for n, p in towers if key in n]
            if not hits:
                raise ValueError(
                    f'trainable entry {key!r} matches no tower parameter '
                    f'(e.g. {[n for n, _ in towers[:4]]}...)')
            for p in hits:
                p.requires_grad_(True)

    def frozen_modules(self):
        """Both towers stay in eval mode."""
        return self.visual, self.text

    @property
    def vocab_size(self) -> int:
        """Size of the text tower's token table."""
        return self.text.vocab_size

    # -------------------------------------------------------------- forward
    def _embed(self, img: Tensor, tokens: Tensor) -> DualEncoderState:
        txt = embed_text(self.text, tokens)  # (B, L, C_t)
        vis, grid = self._tower.embed(self.visual, img)
        return DualEncoderState(
            vis=vis,
            txt=txt,
            grid=grid,
            tokens=tokens,
            pad_mask=tokens == 0,
            vis_prefix=self._tower.vis_prefix,
            layout=self._tower.layout)

    def _shortcuts(self, tower: str, index: int):
        if self.shortcut_module is None:
            return None
        return self.shortcut_module.shortcuts(tower, index)

    def _advance_visual(self, state: DualEncoderState, upto: int) -> None:
        while state.vis_done < upto:
            self._save_taps(state)
            i = state.vis_done
            self._tower.run_block(self.visual, state, i,
                                  self._shortcuts('visual', i))
            state.vis_done += 1

    def _advance_text(self, state: DualEncoderState, upto: int) -> None:
        while state.txt_done < upto:
            i = state.txt_done
            run_text_block(self.text, state, i, self._shortcuts('text', i))
            state.txt_done += 1

    def _save_taps(self, state: DualEncoderState) -> None:
        """Keep the patch tokens of the block just finished if asked for
        (called before the next block, so after its adapters)."""
        v = state.vis_done
        if v in self.visual_taps or v in self.side_taps:
            state.patch_taps[v] = self._tower.tap(state)

    def _call(self, index: int, state: DualEncoderState, step: int,
              ladders: dict) -> None:
        module = self.interactions[index]
        if hasattr(module, 'forward_state'):
            module.forward_state(state, step)
            return
        vis, txt, ladders[index] = module(
            step,
            state.patches(),
            state.txt,
            pad_mask=state.pad_mask,
            prev=ladders.get(index))
        state.set_patches(vis)
        state.txt = txt

    def forward(self,
                img: Tensor,
                tokens: Tensor,
                attention_mask: Optional[Tensor] = None) -> DualEncoderOutput:
        """Run both towers with the adapters.

        Args:
            img (Tensor): (B, 3, H, W) normalised images.
            tokens (Tensor): (B, L) CLIP-BPE ids ``[SOT] ... [EOT] 0 ...``.
            attention_mask (Tensor, optional): (B, L), unused (CLIP's
                causal mask hides padding; ``pad_mask`` = ids == 0).

        Returns:
            DualEncoderOutput: see the class doc.

        Raises:
            ValueError: ``tokens`` not 2-D, longer than the text tower's
                ``context_length`` or without an EOT token.
        """
        state = self._embed(img, tokens)
        ladders = {}  # module index -> state carried between its steps
        for v, t, m, k in self.hooks:
            self._advance_visual(state, v)
            self._advance_text(state, t)
            self._call(m, state, k, ladders)
        self._advance_visual(state, self.num_visual)
        self._advance_text(state, self.num_text)
        self._save_taps(state)
        levels = self._tower.levels(self.visual, state, self.visual_taps)
        text = text_features(self.text, state)
        losses = {}
        if self.side_net is not None:
            feats = {v: state.patch_taps[v] for v in self.side_taps}
            side, aux = self.side_net(img, feats, text.word_feats,
                                      state.pad_mask)
            levels.append(side)  # (B, D_s, h, w)
            losses['loss_side'] = aux * self.side_loss_weight
        return DualEncoderOutput(tuple(levels), text, losses)
