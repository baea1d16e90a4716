"""Build-time width checks between the slots of :class:`RefSegmentor`."""
from typing import Dict, List, Optional, Sequence, Union

import torch.nn as nn

Widths = Union[int, List[int]]


def _widths(value) -> Optional[Widths]:
    """An int width or a list of int widths; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if (isinstance(value, (list, tuple)) and value
            and all(isinstance(v, int) for v in value)):
        return list(value)
    return None


def _selected(out: Widths, index: Union[int, Sequence[int]],
              src: str) -> Widths:
    """The widths of the levels ``index`` picks from a producer's
    ``out`` (an int: every level has that width)."""
    if isinstance(out, int):
        return out if isinstance(index, int) else [out] * len(index)
    picks = [index] if isinstance(index, int) else list(index)
    for i in picks:
        if not -len(out) <= i < len(out):
            raise ValueError(
                f'decode_head in_index {i} is outside the {len(out)} levels '
                f'of {src} (out_channels={out})')
    got = [out[i] for i in picks]
    return got[0] if isinstance(index, int) else got


def check_widths(src_name: str, src: nn.Module, dst_name: str,
                 dst: nn.Module) -> None:
    """Compare the ``out_channels`` a producer (fusion / neck) exposes with
    the ``in_channels`` its consumer (neck / decode head) expects.

    Nothing is checked unless both attributes are an int or a list of
    ints. For an mmseg decode head the levels it reads (``in_index``) are
    compared, summed under ``input_transform='resize_concat'`` (mmseg then
    stores the sum as ``in_channels``). Otherwise an int on one side must
    equal every entry of a list on the other, and two lists must be equal.

    Args:
        src_name (str): Slot name of the producer (for the message).
        src (nn.Module): Producer, e.g. ``HierarchicalHLA`` (out_channels =
            its embed_dims) or ``FeatureAdapter``.
        dst_name (str): Slot name of the consumer.
        dst (nn.Module): Consumer, e.g. ``QueryMaskHead`` (in_channels =
            query width).

    Raises:
        ValueError: The widths differ (names both modules and widths), or
            the head's ``in_index`` is outside the producer's levels.
    """
    out = _widths(getattr(src, 'out_channels', None))
    want = _widths(getattr(dst, 'in_channels', None))
    if out is None or want is None:
        return
    src_desc = f'{src_name} {type(src).__name__}'
    index = getattr(dst, 'in_index', None)
    got = out
    if _widths(index) is not None:
        got = _selected(out, index, src_desc)
        if getattr(dst, 'input_transform', None) == 'resize_concat':
            got = sum(got) if isinstance(got, list) else got
    if isinstance(got, int) and isinstance(want, list):
        ok = all(w == got for w in want)
    elif isinstance(got, list) and isinstance(want, int):
        ok = all(g == want for g in got)
    else:
        ok = got == want
    if not ok:
        raise ValueError(
            f'{src_desc} hands on width(s) {got} (out_channels={out}) but '
            f'{dst_name} {type(dst).__name__} expects in_channels={want}: '
            f'set the {dst_name} in_channels to the {src_name} output width '
            f'(or put a FeatureAdapter between them)')


def text_widths_of(encoder: nn.Module) -> Dict[str, int]:
    """Widths a text encoder hands on: ``word`` (C of ``word_feats``,
    its ``out_channels``) and ``sent`` (C' of ``sent_feat``, its
    ``sent_channels``, else C)."""
    word = _widths(getattr(encoder, 'out_channels', None))
    if not isinstance(word, int):
        return {}
    sent = _widths(getattr(encoder, 'sent_channels', None))
    return dict(word=word, sent=sent if isinstance(sent, int) else word)


def check_text_widths(src_name: str, src: nn.Module, dst_name: str,
                      dst: nn.Module) -> None:
    """Compare the text widths a consumer was built for (its
    ``text_widths``: ``{'word': C, 'sent': C'}``, either key optional) with
    those its text encoder produces (:func:`text_widths_of`).

    Args:
        src_name (str): Slot of the text encoder (for the message).
        src (nn.Module): Text encoder (``out_channels`` / ``sent_channels``).
        dst_name (str): Slot of the consumer, e.g. ``fusion``.
        dst (nn.Module): Consumer, e.g. ``CRISFPN`` (sentence width) or
            ``LanguageGatedFusion`` (word width).

    Raises:
        ValueError: A width differs; the message names both modules, the
            feature and both widths.
    """
    have = text_widths_of(src)
    want = getattr(dst, 'text_widths', None) or {}
    for kind, width in want.items():
        if kind in have and width != have[kind]:
            feat = 'word_feats' if kind == 'word' else 'sent_feat'
            raise ValueError(
                f'{dst_name} {type(dst).__name__} was built for {kind} '
                f'width {width} but {src_name} {type(src).__name__} '
                f'produces {feat} of width {have[kind]}: set the '
                f'{dst_name} text width to {have[kind]}')
