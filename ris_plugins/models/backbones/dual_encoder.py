"""A frozen CLIP visual tower (ViT or ResNet) and CLIP text tower run layer
by layer, together, with adapters called at named hook points (ETRIS,
BarLeRIa). This module is the runner: hook points, validation, freezing
and the forward loop; stepping each tower is in ``_dual_encoder/``."""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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

__all__ = [
    'DualEncoderBackbone', 'DualEncoderOutput', 'DualEncoderState',
    'VISUAL_TOWER_DRIVERS', 'register_visual_tower'
]

#: Visual tower class -> the driver that steps it block by block (the driver
#: interface is in ``_dual_encoder/__init__.py``). Add a tower with
#: :func:`register_visual_tower`; a subclass of a registered tower uses its
#: parent's driver unless it has its own.
VISUAL_TOWER_DRIVERS: Dict[type, type] = {}
#: What a driver must define (``_dual_encoder/__init__.py``).
DRIVER_API = ('layout', 'vis_prefix', 'widths', 'embed', 'run_block', 'tap',
              'levels')
LAYOUTS = ('tokens', 'map')


def register_visual_tower(tower_cls: type,
                          force: bool = False) -> Callable[[type], type]:
    """Class decorator registering a driver for visual towers of class
    ``tower_cls`` (and its subclasses) in :class:`DualEncoderBackbone`,
    e.g. ``@register_visual_tower(MyViT) class MyViTTower: ...``.

    Args:
        tower_cls (type): The visual tower's ``nn.Module`` class (what
            ``MODELS.build(visual)`` returns).
        force (bool): Replace an existing driver for ``tower_cls``.

    Returns:
        Callable: The decorator; it returns the driver unchanged.

    Raises:
        TypeError: The driver lacks part of :data:`DRIVER_API` (names the
            missing members) or has a ``layout`` outside ``'tokens'`` /
            ``'map'``.
        KeyError: ``tower_cls`` already has a driver and ``force`` is
            False (names both drivers).
    """

    def register(driver: type) -> type:
        missing = [m for m in DRIVER_API if not hasattr(driver, m)]
        if missing:
            raise TypeError(f'{driver.__name__} is not a visual tower '
                            f'driver: it lacks {missing} (needs all of '
                            f'{list(DRIVER_API)})')
        if driver.layout not in LAYOUTS:
            raise TypeError(f'{driver.__name__}.layout={driver.layout!r}; '
                            f'valid: {LAYOUTS}')
        old = VISUAL_TOWER_DRIVERS.get(tower_cls)
        if old is not None and old is not driver and not force:
            raise KeyError(f'{tower_cls.__name__} already has the driver '
                           f'{old.__name__}; pass force=True to replace it '
                           f'with {driver.__name__}')
        VISUAL_TOWER_DRIVERS[tower_cls] = driver
        return driver

    return register


register_visual_tower(CLIPViT)(ViTTower)
register_visual_tower(CLIPResNet)(ResNetTower)


def visual_tower_driver(tower: nn.Module) -> type:
    """The registered driver of ``tower``'s class or its nearest
    registered base class.

    Raises:
        TypeError: No driver is registered for the class or any base
            (names the class and the registered ones).
    """
    for cls in type(tower).__mro__:
        if cls in VISUAL_TOWER_DRIVERS:
            return VISUAL_TOWER_DRIVERS[cls]
    known = sorted(c.__name__ for c in VISUAL_TOWER_DRIVERS)
    raise TypeError(
        f'DualEncoderBackbone has no driver for the visual tower '
        f'{type(tower).__name__}; registered towers: {known} (add one with '
        f'ris_plugins.models.backbones.register_visual_tower)')


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
    ``resnet_tower.py``, ``text_tower.py``); another visual tower is added
    by registering a driver for its class with
    :func:`register_visual_tower` (``VISUAL_TOWER_DRIVERS``).

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

    **Tower-adapter protocol.** Interaction modules, the shortcut module
    and the side network declare the widths they were built for with one
    spelling: ``visual_dim`` (an int, the visual width at every hook point
    / tap, or a sequence with one width per hook point, e.g.
    :class:`BridgerRN`) and ``text_dim`` (an int). They are compared with
    the towers at build time (a shortcut module with ``check_towers``
    checks itself, depths included).

    **Shortcuts** (optional, e.g. :class:`SNF`): a module with
    ``shortcuts(tower, i) -> (s1, s2)`` (tower 'visual' / 'text', 0-based
    block i; ``None`` keeps the block unchanged) replacing the block's two
    identity shortcuts.

    **Side network** (optional, e.g. ``GSTSideNet``): called after both
    towers as ``out, aux = side_net(img, clip_feats, words, pad_mask)``
    with ``clip_feats`` = {1-based visual block: (B, h * w, C_v) patch
    tokens} for the blocks in its ``clip_blocks`` (or ``side_taps``), the
    final words (B, L', C_t) and pad mask; ``out`` (B, D_s, h, w) is
    appended to the visual levels and ``aux * side_loss_weight`` is
    returned as ``losses['loss_side']``.

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
        TypeError: No driver is registered for the visual tower's class
            (:func:`register_visual_tower`; CLIPViT and CLIPResNet are), or
            the text tower has no ``transformers`` CLIP text model.
        ValueError: A hook point or tap outside the towers (the message
            lists the valid range), hook points that go backwards in one
            tower, a module whose number of hook points does not match its
            ``num_stages``, a ``trainable`` entry that matches nothing,
            adapter / shortcut / side widths that do not match the towers
            (both numbers named), or shortcuts, a side network or a
            ``forward_state`` module with a tower stepped as a feature map
            (layout 'map', e.g. CLIPResNet).
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
        self._tower = visual_tower_driver(self.visual)
        check_text_tower(self.text)
        self.token_layout = self._tower.layout == 'tokens'
        if not self.token_layout:
            self._check_tokens_only(shortcuts, side_net)
        # Width after visual block 0 (embedding) .. N; token width (ViT).
        self.visual_widths = tuple(self._tower.widths(self.visual))
        self.visual_dim = (self.visual_widths[-1]
                           if self.token_layout else None)
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
    def _check_tokens_only(self, shortcuts: Optional[dict],
                           side_net: Optional[dict]) -> None:
        """Shortcuts and side networks work on token blocks (layout
        'tokens', e.g. CLIPViT)."""
        for name, cfg in (('shortcuts', shortcuts), ('side_net', side_net)):
            if cfg is not None:
                raise ValueError(
                    f'{name} ({cfg.get("type")}) needs a CLIPViT-like '
                    f'visual tower (token blocks); this one is a '
                    f'{type(self.visual).__name__} (a feature map)')

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
        self._check_module_widths(self.side_net,
                                  [(v, None) for v in self.side_taps],
                                  name='side_net')

    def _check_module_widths(self,
                             module: nn.Module,
                             points: List[Tuple[int, Optional[int]]],
                             name: Optional[str] = None) -> None:
        """Tower-adapter protocol: compare a module's declared widths with
        the towers' at its hook points ``(v, t)`` (``t`` None for side
        network taps): ``visual_dim`` (an int for every point, or one per
        point) and ``text_dim`` (an int). Undeclared widths are not
        checked.

        Raises:
            ValueError: A width differs (names the module, the attribute,
                both widths and the hook point), or a per-point
                ``visual_dim`` has another length than ``points``.
        """
        name = name or type(module).__name__
        text_dim = getattr(module, 'text_dim', None)
        if isinstance(text_dim, int) and text_dim != self.text_dim:
            raise ValueError(f'{name}.text_dim={text_dim} does not match the '
                             f'text tower width {self.text_dim}')
        visual_dim = getattr(module, 'visual_dim', None)
        if visual_dim is None:
            return
        if isinstance(visual_dim, int):
            per_point = [('visual_dim', visual_dim)] * len(points)
        else:
            if len(visual_dim) != len(points):
                raise ValueError(
                    f'{name}.visual_dim has {len(visual_dim)} widths but '
                    f'the module is hooked at {len(points)} points '
                    f'{points}')
            per_point = [(f'visual_dim[{k}]', d)
                         for k, d in enumerate(visual_dim)]
        for (attr, got), (v, t) in zip(per_point, points):
            width = self.visual_widths[v]
            if got != width:
                where = f'hook point ({v}, {t})' if t is not None else (
                    f'visual block {v}')
                raise ValueError(
                    f'{name}.{attr}={got} does not match the visual tower '
                    f'width {width} at {where}')

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
            if not self.token_layout and hasattr(module, 'forward_state'):
                raise ValueError(
                    f'{name} edits the token sequences (forward_state) and '
                    f'needs a CLIPViT-like visual tower; this one is a '
                    f'{type(self.visual).__name__} (a feature map)')
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
