"""Convert LAVT / LAVT-One checkpoints and Swin classification checkpoints
into ris_plugins' ``RefSegmentor`` + ``MultiModalSwin`` + ``LAVTHead`` +
``BertTextEncoder`` layout.

Upstream layouts (``yz93/LAVT-RIS``):

* ``lavt``: ``{'model': <backbone.* + classifier.*>, 'bert_model': <BERT,
  possibly 'module.'-prefixed>}``;
* ``lavt_one``: ``{'model': <backbone.* + classifier.* + text_encoder.*>}``;
* both as ``train.py`` saves them: the above plus ``'optimizer'``,
  ``'lr_scheduler'`` (state dicts), ``'epoch'`` and ``'args'`` (the
  ``argparse.Namespace`` of the run). The file is read with
  ``weights_only=True`` and exactly ``argparse.Namespace`` allowed for that
  load (:func:`load_lavt`); any other object is refused with an error
  naming the file and the global;
* Swin (``microsoft/Swin-Transformer``), e.g.
  ``swin_base_patch4_window12_384_22k.pth``: ``{'model': <patch_embed.*,
  layers.*, norm.*, head.*>}``, loaded as backbone initialisation
  (``--swin``; the classifier ``head`` and final ``norm`` are dropped).

Usage::

    python tools/model_converters/lavt_to_ris.py lavt_one_refcoco.pth \
        work_dirs/lavt_refcoco_converted.pth \
        [--config configs/lavt/lavt_swin-b_8xb4-40e_refcoco-480x480.py]
    python tools/model_converters/lavt_to_ris.py --swin \
        swin_base_patch4_window12_384_22k.pth pretrain/swin_b_w12_22k.pth

With ``--config`` the converted weights are loaded strictly into the
model built from that config; any missing or unexpected key is reported,
grouped by module, and nothing is written.
"""
import argparse
import os.path as osp
import re
import sys
from collections import OrderedDict
from typing import Dict, List, Tuple

from torch import Tensor

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import converter_utils as cu  # noqa: E402

#: Globals a LAVT training checkpoint may hold besides tensors and plain
#: containers: ``train.py`` saves its ``args`` (``argparse.Namespace``).
LAVT_ALLOWED_GLOBALS = (argparse.Namespace, )

# (upstream prefix, our prefix) templates; {i}, {j} match integers. The
# table is used in both directions (tests write upstream-layout checkpoints
# from it).
SWIN_MAP: List[Tuple[str, str]] = [
    ('patch_embed.proj.', 'patch_embed.projection.'),
    ('patch_embed.norm.', 'patch_embed.norm.'),
    ('layers.{i}.blocks.{j}.attn.', 'stages.{i}.blocks.{j}.attn.w_msa.'),
    ('layers.{i}.blocks.{j}.mlp.fc1.', 'stages.{i}.blocks.{j}.ffn.layers.0.0.'),
    ('layers.{i}.blocks.{j}.mlp.fc2.', 'stages.{i}.blocks.{j}.ffn.layers.1.'),
    ('layers.{i}.blocks.{j}.norm1.', 'stages.{i}.blocks.{j}.norm1.'),
    ('layers.{i}.blocks.{j}.norm2.', 'stages.{i}.blocks.{j}.norm2.'),
    ('layers.{i}.downsample.', 'stages.{i}.downsample.'),
    ('layers.{i}.fusion.', 'pwams.{i}.'),
    ('layers.{i}.res_gate.', 'pwams.{i}.res_gate.'),
    ('norm{i}.', 'norm{i}.'),
]
# SimpleDecoding conv{j}_{i} / bn{j}_{i} -> LAVTHead fuse.{4-i}.{j-1}.
DECODER_MAP: List[Tuple[str, str]] = [
    (f'{kind}{j}_{i}.', f'fuse.{4 - i}.{j - 1}.{kind}.')
    for i in (4, 3, 2) for j in (1, 2) for kind in ('conv', 'bn')
] + [('conv1_1.', 'conv_seg.')]
DROP = re.compile(r'(attn_mask$|^head\.|^norm\.|^pooler\.)')


def _regex(template: str) -> 're.Pattern':
    pattern = re.escape(template)
    for name in ('i', 'j'):
        pattern = pattern.replace(re.escape('{%s}' % name),
                                  f'(?P<{name}>\\d+)')
    return re.compile('^' + pattern)


def map_key(table: List[Tuple[str, str]], key: str,
            reverse: bool = False) -> str:
    """Rename ``key`` by the first matching template of ``table``
    (upstream -> ours, or ours -> upstream with ``reverse``).

    Raises:
        KeyError: No template matches.
    """
    for upstream, ours in table:
        src, dst = (ours, upstream) if reverse else (upstream, ours)
        m = _regex(src).match(key)
        if m:
            return dst.format(**m.groupdict()) + key[m.end():]
    raise KeyError(f'no conversion rule for key {key!r}')


def merging_unfold_order(w: Tensor) -> Tensor:
    """Reorder a PatchMerging weight's last axis (4C) from Swin's
    ``cat[x(0,0), x(1,0), x(0,1), x(1,1)]`` blocks to ``nn.Unfold``'s
    channel-major order with kernel positions (0,0), (0,1), (1,0), (1,1),
    used by mmpretrain's PatchMerging. ``w``: (..., 4C)."""
    *lead, c4 = w.shape
    blocks = w.reshape(*lead, 4, c4 // 4)[..., [0, 2, 1, 3], :]
    return blocks.transpose(-1, -2).reshape(*lead, c4)


def merging_swin_order(w: Tensor) -> Tensor:
    """Inverse of :func:`merging_unfold_order`."""
    *lead, c4 = w.shape
    blocks = w.reshape(*lead, c4 // 4, 4).transpose(-1, -2)
    return blocks[..., [0, 2, 1, 3], :].reshape(*lead, c4)


def convert_swin(state: Dict[str, Tensor],
                 prefix: str = 'backbone.') -> Dict[str, Tensor]:
    """Upstream Swin / LAVT backbone keys -> ``MultiModalSwin`` keys."""
    out = OrderedDict()
    for k, v in state.items():
        if DROP.search(k):
            continue
        new = map_key(SWIN_MAP, k)
        if '.downsample.' in new:
            v = merging_unfold_order(v)
        out[prefix + new] = v
    return out


def _strip(state: Dict[str, Tensor], prefix: str) -> Dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items()
            if k.startswith(prefix)}


def _bert(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    state = {re.sub(r'^module\.', '', k): v for k, v in state.items()}
    return {f'text_encoder.bert.{k}': v for k, v in state.items()
            if not DROP.search(k)}


def convert_lavt(ckpt: dict) -> Dict[str, Tensor]:
    """A LAVT or LAVT-One checkpoint -> a ``RefSegmentor`` state dict.

    Raises:
        KeyError: No ``'model'`` entry, no BERT weights, or an upstream key
            without a rule.
    """
    if 'model' not in ckpt:
        raise KeyError(f"LAVT checkpoint has no 'model' entry; keys: "
                       f'{sorted(ckpt)}')
    model = {re.sub(r'^module\.', '', k): v
             for k, v in ckpt['model'].items()}
    out = OrderedDict()
    out.update(convert_swin(_strip(model, 'backbone.')))
    for k, v in _strip(model, 'classifier.').items():
        out['decode_head.' + map_key(DECODER_MAP, k)] = v
    bert = _strip(model, 'text_encoder.') or ckpt.get('bert_model')
    if not bert:
        raise KeyError("no BERT weights: expected 'text_encoder.*' in "
                       "'model' (lavt_one) or a 'bert_model' entry (lavt)")
    out.update(_bert(bert))
    unknown = [k for k in model if not k.startswith(
        ('backbone.', 'classifier.', 'text_encoder.'))]
    if unknown:
        raise KeyError(f'unexpected LAVT keys {unknown[:5]}')
    return out


def to_upstream_lavt_one(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Our ``RefSegmentor`` state dict -> a LAVT-One ``{'model': ...}``
    checkpoint (the inverse of :func:`convert_lavt`)."""
    model = OrderedDict()
    for k, v in state.items():
        if k.startswith('backbone.'):
            up = map_key(SWIN_MAP, k[len('backbone.'):], reverse=True)
            if '.downsample.' in up:
                v = merging_swin_order(v)
            model['backbone.' + up] = v
        elif k.startswith('decode_head.'):
            up = map_key(DECODER_MAP, k[len('decode_head.'):], reverse=True)
            model['classifier.' + up] = v
        elif k.startswith('text_encoder.bert.'):
            model['text_encoder.' + k[len('text_encoder.bert.'):]] = v
        else:
            raise KeyError(f'no upstream key for {k!r}')
    return {'model': model}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('src', help='upstream checkpoint')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--swin', action='store_true',
                        help='src is a Swin classification checkpoint')
    parser.add_argument('--config', help='verify against this config')
    return parser.parse_args()


def load_lavt(path: str) -> dict:
    """Read a LAVT / LAVT-One checkpoint (as ``train.py`` writes it) with
    ``weights_only=True``, allowing exactly ``argparse.Namespace``.

    Raises:
        FileNotFoundError, RuntimeError: Missing, empty or truncated file
            (named).
        pickle.UnpicklingError: Any other global (file and global named).
        KeyError: Not a dict.
    """
    ckpt = cu.load_upstream(path, allowed_globals=LAVT_ALLOWED_GLOBALS)
    if not isinstance(ckpt, dict):
        raise KeyError(f"{path}: expected a LAVT checkpoint dict with 'model'"
                       f', got {type(ckpt).__name__}')
    return ckpt


def convert_file(path: str, swin: bool = False) -> Dict[str, Tensor]:
    """Read and convert the upstream checkpoint ``path`` (LAVT / LAVT-One,
    or a Swin classification checkpoint with ``swin``).

    Raises:
        KeyError: An unknown layout or key; the message names ``path``.
    """
    if swin:
        ckpt = cu.load_upstream(path)
        state = ckpt.get('model', ckpt) if isinstance(ckpt, dict) else ckpt
        if not isinstance(state, dict):
            raise KeyError(f'{path}: not a Swin state dict')
        return convert_swin(state)
    ckpt = load_lavt(path)
    try:
        return convert_lavt(ckpt)
    except KeyError as err:
        raise KeyError(f'{path}: {err.args[0]}') from err


def main() -> None:
    """Convert, optionally verify against ``--config``, and write
    ``{'state_dict', 'meta'}`` to ``dst`` (nothing on a mismatch)."""
    args = parse_args()
    converted = convert_file(args.src, args.swin)
    if args.config:
        from ris_plugins.utils.state_dict import load_state_dict_strict
        model = cu.build_model(args.config)
        target = model.backbone if args.swin else model
        state = ({k[len('backbone.'):]: v for k, v in converted.items()}
                 if args.swin else converted)
        load_state_dict_strict(target, state, args.src)
    cu.save_converted(converted, args.dst, args.src)


if __name__ == '__main__':
    main()
