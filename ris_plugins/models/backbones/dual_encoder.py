"""A frozen CLIP visual tower (ViT or ResNet) and CLIP text tower run layer
by layer, together, with adapters called at named hook points (ETRIS,
BarLeRIa)."""
from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from mmpretrain.models.utils import resize_pos_embed
from torch import Tensor

from mmseg.registry import MODELS
from ..text_encoders import TextFeatures
from .clip_resnet import CLIPResNet
from .clip_vit import CLIPViT

# ResNet "blocks" of the runner: block i (1-based) is this stage.
RESNET_BLOCKS = ('layer2', 'layer3', 'layer4')


@dataclass
class DualEncoderState:
    """Everything the two towers carry between blocks; adapters read and
    write it in place.

    Attributes:
        vis (Tensor): ViT (``layout='tokens'``): (B, N_v, C_v) visual
            sequence ``[CLS, prompts (vis_prefix - 1), patches (h * w)]``;
            ResNet (``layout='map'``): the (B, C_v, h, w) map of the last
            stage run.
        txt (Tensor): (B, L', C_t) text sequence ``[prepended (txt_prefix),
            the L embedded tokens]``.
        grid (tuple[int, int]): (h, w) patch grid (ResNet: of the current
            map).
        tokens (Tensor): (B, L) CLIP-BPE ids of the sentence.
        pad_mask (Tensor): (B, L') bool, True at padding (ids == 0) of the
            text sequence; prepended tokens are never padding.
        vis_prefix (int): Tokens before the patches (1 = the CLS token).
        txt_prefix (int): Tokens prepended to the text.
        vis_key_mask (Tensor, optional): (B, N_v) bool, True at visual
            tokens other tokens must not attend to (padded prompts).
        vis_done (int): Visual blocks run so far (0 = embeddings only).
        txt_done (int): Text blocks run so far.
        patch_taps (dict[int, Tensor]): 1-based visual block -> (B, h * w,
            C_v) patch tokens after that block (and after the adapters
            hooked there); ResNet: the (B, C_v, h, w) map.
        layout (str): 'tokens' (ViT) or 'map' (ResNet).
    """
    vis: Tensor
    txt: Tensor
    grid: Tuple[int, int]
    tokens: Tensor
    pad_mask: Tensor
    vis_prefix: int = 1
    txt_prefix: int = 0
    vis_key_mask: Optional[Tensor] = None
    vis_done: int = 0
    txt_done: int = 0
    patch_taps: Dict[int, Tensor] = field(default_factory=dict)
    layout: str = 'tokens'

    @property
    def eot_index(self) -> Tensor:
        """(B,) position of CLIP's EOT token (the largest id) in ``txt``."""
        return self.tokens.argmax(dim=-1) + self.txt_prefix

    def patches(self) -> Tensor:
        """Patch tokens as a map (B, C_v, h, w) (CLS and prompts dropped);
        ResNet: the current map itself."""
        if self.layout == 'map':
            return self.vis
        x = self.vis[:, self.vis_prefix:]  # (B, h*w, C_v)
        b, _, c = x.shape
        return x.transpose(1, 2).reshape(b, c, *self.grid)

    def set_patches(self, x: Tensor) -> None:
        """Replace the patch tokens by the map x (B, C_v, h, w)."""
        if self.layout == 'map':
            self.vis = x
            self.grid = tuple(x.shape[-2:])
            return
        x = x.flatten(2).transpose(1, 2)  # (B, h*w, C_v)
        self.vis = torch.cat([self.vis[:, :self.vis_prefix], x], dim=1)

    def prepend_visual(self, prompts: Tensor,
                       key_mask: Optional[Tensor] = None) -> None:
        """Insert prompt tokens (B, P, C_v) right after the CLS token.

        Args:
            prompts (Tensor): (B, P, C_v).
            key_mask (Tensor, optional): (B, P) bool, True where the prompt
                must be hidden from attention (e.g. it comes from padding).

        Raises:
            ValueError: The visual tower is a ResNet (no token sequence).
        """
        if self.layout == 'map':
            raise ValueError('prepend_visual needs a token sequence (CLIPViT '
                             'visual tower); a CLIPResNet tower has none')
        b, p, _ = prompts.shape
        self.vis = torch.cat(
            [self.vis[:, :1], prompts, self.vis[:, 1:]], dim=1)
        if key_mask is not None or self.vis_key_mask is not None:
            old = self.vis_key_mask
            if old is None:
                old = self.vis.new_zeros(b, self.vis.shape[1] - p,
                                         dtype=torch.bool)
            if key_mask is None:
                key_mask = old.new_zeros(b, p)
            self.vis_key_mask = torch.cat([old[:, :1], key_mask, old[:, 1:]],
                                          dim=1)  # (B, N_v)
        self.vis_prefix += p

    def prepend_text(self, tokens: Tensor) -> None:
        """Prepend tokens (B, P, C_t) to the text; they are real tokens
        (not padding), and the EOT index moves by P."""
        p = tokens.shape[1]
        self.txt = torch.cat([tokens, self.txt], dim=1)  # (B, P + L', C_t)
        self.pad_mask = torch.cat(
            [self.pad_mask.new_zeros(tokens.shape[0], p), self.pad_mask],
            dim=1)
        self.txt_prefix += p


class DualEncoderOutput(NamedTuple):
    """What :class:`DualEncoderBackbone` returns.

    Attributes:
        visual (tuple[Tensor]): Visual levels for the neck: the
            ``visual_taps`` maps (B, C_v, h, w), the projected final map
            (B, D, h, w) and, with a side network, its output (B, D_s, h,
            w) last.
        text (TextFeatures): word_feats (B, L', C_t) (``ln_final``),
            sent_feat (B, D_t) (EOT token @ ``text_projection``), pad_mask
            (B, L').
        losses (dict[str, Tensor]): Auxiliary losses (side network).
    """
    visual: Tuple[Tensor, ...]
    text: TextFeatures
    losses: Dict[str, Tensor]


def vit_attention(attn: nn.Module, x: Tensor,
                  key_mask: Optional[Tensor] = None) -> Tensor:
    """mmpretrain ``MultiheadAttention.forward`` with an optional key
    padding mask (the library module has none).

    Args:
        attn (nn.Module): mmpretrain ``MultiheadAttention`` (its ``qkv``,
            ``proj``, ``proj_drop``, ``gamma1``, ``out_drop`` are used).
        x (Tensor): (B, N, C).
        key_mask (Tensor, optional): (B, N) bool, True = not attended to.
            None gives exactly ``attn(x)``.

    Returns:
        Tensor: (B, N, C).
    """
    if key_mask is None:
        return attn(x)
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads,
                              attn.head_dims).permute(2, 0, 3, 1, 4)
    allowed = ~key_mask[:, None, None, :]  # (B, 1, 1, N)
    out = F.scaled_dot_product_attention(
        qkv[0], qkv[1], qkv[2], attn_mask=allowed,
        dropout_p=attn.attn_drop if attn.training else 0.)  # (B, h, N, d)
    out = attn.proj(out.transpose(1, 2).reshape(b, n, attn.embed_dims))
    return attn.out_drop(attn.gamma1(attn.proj_drop(out)))  # (B, N, C)


def vit_block(layer: nn.Module, x: Tensor,
              key_mask: Optional[Tensor] = None,
              shortcuts: Optional[Tuple[nn.Module, nn.Module]] = None
              ) -> Tensor:
    """mmpretrain ``TransformerEncoderLayer`` with optional key mask and
    shortcut transforms (SNF): ``x = s1(x) + Attn(LN1 x)``, ``x = s2(x) +
    FFN(LN2 x)``. With neither it is exactly ``layer(x)``. (B, N, C) in
    and out."""
    if key_mask is None and shortcuts is None:
        return layer(x)
    s1, s2 = shortcuts if shortcuts is not None else (None, None)
    a = vit_attention(layer.attn, layer.ln1(x), key_mask)  # (B, N, C)
    x = (s1(x) if s1 is not None else x) + a
    res = s2(x) if s2 is not None else x
    return layer.ffn(layer.ln2(x), identity=res)  # (B, N, C)


def clip_text_block(layer: nn.Module, x: Tensor, causal: Tensor,
                    shortcuts: Optional[Tuple[nn.Module, nn.Module]] = None
                    ) -> Tensor:
    """``transformers`` ``CLIPEncoderLayer`` with optional shortcut
    transforms (SNF): ``x = s1(x) + Attn(LN1 x)``, ``x = s2(x) + MLP(LN2
    x)``; without them exactly the library layer. x (B, L, C), causal
    (1, 1, L, L) additive mask."""
    if shortcuts is None:
        return layer(x, None, causal)[0]
    s1, s2 = shortcuts
    a = layer.self_attn(
        hidden_states=layer.layer_norm1(x),
        attention_mask=None,
        causal_attention_mask=causal)[0]  # (B, L, C)
    x = s1(x) + a
    return s2(x) + layer.mlp(layer.layer_norm2(x))  # (B, L, C)


def causal_mask(length: int, ref: Tensor) -> Tensor:
    """CLIP's causal mask for ``length`` tokens: (1, 1, L, L) additive,
    the dtype's minimum above the diagonal (as ``transformers``)."""
    mask = torch.full((length, length), torch.finfo(ref.dtype).min,
                      dtype=ref.dtype, device=ref.device)
    return mask.triu(1)[None, None]


def _pairs(after) -> List[Tuple[int, int]]:
    """``after`` = (v, t) or a list of them -> list of (v, t)."""
    if (isinstance(after, (tuple, list)) and len(after) == 2
            and all(isinstance(a, int) for a in after)):
        return [tuple(after)]
    return [tuple(a) for a in after]


@MODELS.register_module()
class DualEncoderBackbone(BaseModule):
    """Frozen CLIP visual and text towers run block by block, together,
    with adapters at named hook points: one mechanism for ETRIS's Bridgers
    (``kkakkkka/ETRIS: model/bridger.py`` ``Bridger_ViT``, ``Bridger_RN``)
    and BarLeRIa's SNF / LIM / GST (``NastrondAd/BarLeRIa:
    model/intertwiner.py``, ``snf.py``, ``model/segmenter.py``);
    ``shared/docs/ris_methods.md`` 3, 4. The towers stay the library modules (:class:`CLIPViT` on mmpretrain
    or :class:`CLIPResNet` on mmpretrain's ``ModifiedResNet``, and
    :class:`RefCLIPTextEncoder` on ``transformers``); nothing of CLIP is
    copied.

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
    final
    words (B, L', C_t) and pad mask; ``out`` (B, D_s, h, w) is appended to
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

    ``RefSegmentor`` sees ``encodes_text = True`` and calls
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

    encodes_text = True

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
        if not isinstance(self.visual, (CLIPViT, CLIPResNet)):
            raise TypeError(f'DualEncoderBackbone needs a CLIPViT or '
                            f'CLIPResNet visual tower, got '
                            f'{type(self.visual).__name__}')
        if not hasattr(getattr(self.text, 'clip', None), 'text_model'):
            raise TypeError(
                f'DualEncoderBackbone needs a RefCLIPTextEncoder-like text '
                f'tower (.clip.text_model), got {type(self.text).__name__}')
        self.is_resnet = isinstance(self.visual, CLIPResNet)
        if self.is_resnet:
            # Width after visual block 0 (stem + layer1) .. 3 (layer4).
            self.visual_widths = tuple(
                getattr(self.visual, n)[-1].bn3.num_features
                for n in ('layer1', ) + RESNET_BLOCKS)
            self.visual_dim = None
            self._check_resnet_only(shortcuts, side_net)
        else:
            self.visual_dim = self.visual.embed_dims
            self.visual_widths = (self.visual_dim, ) * (
                len(self.visual.layers) + 1)
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
            self.side_net = MODELS.build(side_net)
            taps = getattr(self.side_net, 'clip_blocks', None) or side_taps
            if not taps:
                raise ValueError('side_net has no clip_blocks: give '
                                 'side_taps (1-based visual blocks)')
            for v in taps:
                self._check_block('side_net taps', v, self.num_visual,
                                  low=1)
            self.side_taps = tuple(taps)
            self._check_width('side_net', 'clip_dim', self.visual_dim)
            self._check_width('side_net', 'text_dim', self.text_dim)
        self.side_loss_weight = side_loss_weight
        self._freeze(trainable)

    # ---------------------------------------------------------------- build
    @staticmethod
    def _check_resnet_only(shortcuts: Optional[dict],
                           side_net: Optional[dict]) -> None:
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

    def _check_width(self, name: str, attr: str, expected: int) -> None:
        got = getattr(self.side_net, attr, None)
        if got is not None and got != expected:
            raise ValueError(f'{name}.{attr}={got} does not match the '
                             f'encoder width {expected}')

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
            points = _pairs(spec['after'])
            if self.is_resnet and hasattr(module, 'forward_state'):
                raise ValueError(
                    f'{type(module).__name__} edits the token sequences '
                    f'(forward_state) and needs a CLIPViT visual tower; '
                    f'this one is a CLIPResNet')
            stages = getattr(module, 'num_stages', None)
            if stages is not None and stages != len(points):
                raise ValueError(
                    f'{type(module).__name__} has num_stages={stages} but '
                    f'is hooked at {len(points)} points {points}')
            for k, (v, t) in enumerate(points):
                self._check_block(f'{type(module).__name__} hook ({v}, {t}) '
                                  'visual', v, self.num_visual)
                self._check_block(f'{type(module).__name__} hook ({v}, {t}) '
                                  'text', t, self.num_text)
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

    def train(self, mode: bool = True) -> 'DualEncoderBackbone':
        """Set train mode; the frozen towers stay in eval mode."""
        super().train(mode)
        self.visual.eval()
        self.text.eval()
        return self

    @property
    def vocab_size(self) -> int:
        """Size of the text tower's token table."""
        return self.text.vocab_size

    # -------------------------------------------------------------- forward
    def _embed(self, img: Tensor, tokens: Tensor) -> DualEncoderState:
        self.text._check_tokens(tokens)
        t = self.text.clip.text_model.embeddings(
            input_ids=tokens)  # (B, L, C_t)
        if self.is_resnet:
            x = self._resnet_stem(img)  # (B, 4w, H/4, W/4)
            return DualEncoderState(
                vis=x, txt=t, grid=tuple(x.shape[-2:]), tokens=tokens,
                pad_mask=tokens == 0, vis_prefix=0, layout='map')
        vit = self.visual
        x, grid = vit.patch_embed(img)  # (B, h*w, C_v)
        cls = vit.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, C_v)
        x = torch.cat([cls, x], dim=1)
        x = x + resize_pos_embed(
            vit.pos_embed, vit.patch_resolution, grid,
            mode=vit.interpolate_mode,
            num_extra_tokens=vit.num_extra_tokens)
        x = vit.pre_norm(vit.drop_after_pos(x))  # (B, 1 + h*w, C_v)
        return DualEncoderState(
            vis=x, txt=t, grid=tuple(grid), tokens=tokens,
            pad_mask=tokens == 0)

    def _resnet_stem(self, img: Tensor) -> Tensor:
        """CLIP ResNet stem + layer1, as ``CLIPResNet.forward``: (B, 3, H,
        W) -> (B, 4w, H/4, W/4)."""
        rn = self.visual
        x = img.type(rn.conv1.weight.dtype)
        for conv, bn in ((rn.conv1, rn.bn1), (rn.conv2, rn.bn2),
                         (rn.conv3, rn.bn3)):
            x = rn.relu(bn(conv(x)))  # (B, w, H/2, W/2)
        return rn.layer1(rn.avgpool(x))  # (B, 4w, H/4, W/4)

    def _shortcuts(self, tower: str, index: int):
        if self.shortcut_module is None:
            return None
        return self.shortcut_module.shortcuts(tower, index)

    def _advance_visual(self, state: DualEncoderState, upto: int) -> None:
        while state.vis_done < upto:
            self._save_taps(state)
            i = state.vis_done
            if self.is_resnet:
                stage = getattr(self.visual, RESNET_BLOCKS[i])
                state.set_patches(stage(state.vis))  # (B, C_i, h_i, w_i)
                state.vis_done += 1
                continue
            state.vis = vit_block(self.visual.layers[i], state.vis,
                                  state.vis_key_mask,
                                  self._shortcuts('visual', i))
            state.vis_done += 1

    def _advance_text(self, state: DualEncoderState, upto: int) -> None:
        layers = self.text.clip.text_model.encoder.layers
        while state.txt_done < upto:
            i = state.txt_done
            state.txt = clip_text_block(
                layers[i], state.txt, causal_mask(state.txt.shape[1],
                                                  state.txt),
                self._shortcuts('text', i))
            state.txt_done += 1

    def _save_taps(self, state: DualEncoderState) -> None:
        """Keep the patch tokens of the block just finished if asked for
        (called before the next block, so after its adapters)."""
        v = state.vis_done
        if v in self.visual_taps or v in self.side_taps:
            state.patch_taps[v] = (state.vis if self.is_resnet else
                                   state.vis[:, state.vis_prefix:])

    def _call(self, index: int, state: DualEncoderState, step: int,
              ladders: dict) -> None:
        module = self.interactions[index]
        if hasattr(module, 'forward_state'):
            module.forward_state(state, step)
            return
        vis, txt, ladders[index] = module(
            step, state.patches(), state.txt, pad_mask=state.pad_mask,
            prev=ladders.get(index))
        state.set_patches(vis)
        state.txt = txt

    def _visual_levels(self, state: DualEncoderState) -> List[Tensor]:
        """The tapped maps and the final map (ViT: ``ln_post @ proj``;
        ResNet: ``attnpool``), each (B, C, h, w)."""
        if self.is_resnet:
            levels = [state.patch_taps[v] for v in self.visual_taps]
            levels.append(self.visual.attnpool(state.vis))  # (B, D, h, w)
            return levels
        b, c = state.vis.shape[0], self.visual_dim
        levels = [
            state.patch_taps[v].transpose(1, 2).reshape(b, c, *state.grid)
            for v in self.visual_taps
        ]  # (B, C_v, h, w) each
        final = self.visual.ln1(state.vis[:, state.vis_prefix:])
        if self.visual.output_dim is not None:
            final = final @ self.visual.proj  # (B, h*w, D)
        levels.append(final.transpose(1, 2).reshape(b, -1, *state.grid))
        return levels

    def forward(self,
                img: Tensor,
                tokens: Tensor,
                attention_mask: Optional[Tensor] = None
                ) -> DualEncoderOutput:
        """Run both towers with the adapters.

        Args:
            img (Tensor): (B, 3, H, W) normalised images.
            tokens (Tensor): (B, L) CLIP-BPE ids ``[SOT] ... [EOT] 0 ...``.
            attention_mask (Tensor, optional): (B, L), unused (CLIP's
                causal mask hides padding; ``pad_mask`` = ids == 0).

        Returns:
            DualEncoderOutput: see the class doc.
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
        b = state.vis.shape[0]
        levels = self._visual_levels(state)
        text_model = self.text.clip.text_model
        words = text_model.final_layer_norm(state.txt)  # (B, L', C_t)
        batch = torch.arange(b, device=words.device)
        sent = self.text.clip.text_projection(
            words[batch, state.eot_index])  # (B, D_t)
        text = TextFeatures(words, sent, state.pad_mask)
        losses = {}
        if self.side_net is not None:
            feats = {v: state.patch_taps[v] for v in self.side_taps}
            side, aux = self.side_net(img, feats, words, state.pad_mask)
            levels.append(side)  # (B, D_s, h, w)
            losses['loss_side'] = aux * self.side_loss_weight
        return DualEncoderOutput(tuple(levels), text, losses)
