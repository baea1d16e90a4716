"""Integer word-embedding tables in quantized ONNX exports.

The frozen text encoders' word-embedding tables (BERT / MiniLM
``word_embeddings``, CLIP ``token_embedding``) are most of a small RIS
model's file: all-MiniLM-L6-v2's 30522 x 384 float32 table is 44.7 MiB of
the demo baseline's 100 MiB. PTQ4RIS keeps embeddings FP (they are a table
look-up, not a product), so :mod:`.qdq` alone leaves them float. Inside
:func:`embedding_export_mode` the tables export as integers with symmetric
per-row scales and the graph gathers the integer rows first and
dequantizes only the L gathered rows:

========  ==================================================================
mode      ONNX (V rows, C columns)
========  ==================================================================
``int8``  standard ops: ``Gather`` of the int8 table (V, C) and of the
          float32 scales (V, 1), ``Cast`` to float, ``Mul``; codes in
          [-127, 127], scale = max|row| / 127 (one scale per row)
``int4``  ONNX Runtime's contrib op ``com.microsoft.GatherBlockQuantized``
          (bits=4; CPU kernel since ONNX Runtime 1.20): the table stays
          4-bit in memory, two codes per byte (uint8, zero point 8), codes in
          [-7, 7], scale = max|block| / 7 per block of ``block`` columns of a
          row (the op needs a power of two >= 16; 128 for C = 384, so each
          row has C / 128 scales). A table whose C has no such divisor is
          stored ``int8`` instead (reported).
========  ==================================================================

Position and token-type tables stay float: 512 x 384 and 2 x 384 float32
for MiniLM (0.75 MiB, < 1% of the file), read at constant indices, so ONNX
Runtime folds their look-up at load anyway.

The rounding moves each table entry by at most half a step (scale / 2); the
accuracy effect on all-MiniLM-L6-v2 is measured in
``projects/ptq4ris/README.md``. The fake-quantized PyTorch model
(the simulation) keeps the tables float.
"""
import contextlib
from typing import Dict, Iterator, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

#: ``embedding`` option of :func:`ris_plugins.deploy.qdq.export_qdq`:
#: 'auto' is int4 for 4-bit weight settings (W4A8, W4A4), else int8.
EMBEDDING_MODES = ('auto', 'float', 'int8', 'int4')
#: module-name endings of the word-embedding tables (transformers' BERT /
#: CLIP text embeddings).
WORD_TABLES = ('word_embeddings', 'token_embedding')
#: GatherBlockQuantized block sizes: powers of two in [16, MAX_BLOCK].
MIN_BLOCK, MAX_BLOCK = 16, 128


def check_embedding_mode(mode: str) -> str:
    """Raises ValueError naming ``mode`` and the valid options."""
    if mode not in EMBEDDING_MODES:
        raise ValueError(f'unknown embedding={mode!r}; valid options: '
                         f'{list(EMBEDDING_MODES)}')
    return mode


def word_embedding_tables(model: nn.Module) -> Dict[str, nn.Embedding]:
    """``{module name: nn.Embedding}`` of the model's word-embedding tables
    (names ending in one of :data:`WORD_TABLES`; a table shared by two
    modules is listed once)."""
    out, seen = {}, set()
    for name, module in model.named_modules():
        if (isinstance(module, nn.Embedding) and name.endswith(WORD_TABLES)
                and id(module) not in seen):
            seen.add(id(module))
            out[name] = module
    return out


def int4_block(channels: int, max_block: int = MAX_BLOCK) -> Optional[int]:
    """The largest power of two in [16, ``max_block``] that divides
    ``channels`` (GatherBlockQuantized's block size), or None."""
    block = max_block
    while block >= MIN_BLOCK:
        if channels % block == 0:
            return block
        block //= 2
    return None


def quantize_rows(weight: Tensor, bits: int, block: Optional[int] = None,
                  name: str = 'table') -> Tuple[Tensor, Tensor]:
    """Symmetric integer codes of a (V, C) table, per row or per block of
    ``block`` columns of a row.

    scale = max|values| / (2^(b-1) - 1) (1 for an all-zero row or block),
    codes = round_half_even(w / scale) in [-(2^(b-1) - 1), 2^(b-1) - 1].

    Args:
        weight: (V, C) float table.
        bits: 8 or 4.
        block: columns per scale (None: the whole row); must divide C.
        name: the table's name for errors.

    Returns:
        tuple: codes (V, C) int8 and scales (V, C // block) float32
        ((V, 1) per row); ``codes * scales`` (broadcast per block) is the
        dequantized table.

    Raises:
        ValueError: bits not 4 or 8, a block that does not divide C, or
            non-finite values (naming the table and the first bad row).
    """
    if bits not in (4, 8):
        raise ValueError(f'{name}: embedding tables are stored with 4 or 8 '
                         f'bits, got {bits}')
    w = weight.detach().float()
    v, c = w.shape
    block = c if block is None else block
    if c % block:
        raise ValueError(f'{name}: block {block} does not divide the '
                         f'{c} columns')
    bad = (~torch.isfinite(w)).any(dim=1).nonzero()
    if bad.numel():
        raise ValueError(f'{name}: non-finite values in {bad.numel()} rows '
                         f'(first: row {int(bad[0])}); cannot quantize')
    qmax = 2**(bits - 1) - 1
    blocks = w.view(v, c // block, block)
    amax = blocks.abs().amax(dim=-1)  # (V, C // block)
    scales = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    codes = torch.round(blocks / scales[..., None]).clamp(-qmax, qmax)
    return codes.view(v, c).to(torch.int8), scales


def dequantize_rows(codes: Tensor, scales: Tensor) -> Tensor:
    """(V, C) float32 table of :func:`quantize_rows`' codes and scales."""
    v, c = codes.shape
    nb = scales.shape[1]
    return (codes.view(v, nb, c // nb).float() * scales[..., None]).view(
        v, c)


def pack_int4(codes: Tensor) -> Tensor:
    """(V, C) int8 codes in [-8, 7] -> (V, C / 2) uint8, code + 8 per
    nibble, even columns in the low nibble (GatherBlockQuantized's uint8
    layout with its default zero point 8)."""
    u = (codes.to(torch.int16) + 8).to(torch.uint8)
    return u[:, 0::2] | (u[:, 1::2] << 4)


class _GatherBlockQuantized(torch.autograd.Function):
    """Rows ``idx`` of a 4-bit block-quantized table: eager, the
    dequantized rows; exported, ``com.microsoft.GatherBlockQuantized``."""

    @staticmethod
    def forward(ctx, packed: Tensor, idx: Tensor, scales: Tensor,
                block: int) -> Tensor:
        lo = (packed & 15).to(torch.int8) - 8
        hi = (packed >> 4).to(torch.int8) - 8
        codes = torch.stack([lo, hi], dim=-1).flatten(-2)
        return F.embedding(idx, dequantize_rows(codes, scales))

    @staticmethod
    def symbolic(g, packed, idx, scales, block):
        return g.op('com.microsoft::GatherBlockQuantized', packed, idx,
                    scales, gather_axis_i=0, quantize_axis_i=1,
                    block_size_i=block, bits_i=4)


def _int8_forward(module: nn.Embedding, idx: Tensor) -> Tensor:
    """Gather int8 rows and their scales, dequantize the gathered rows."""
    rows = F.embedding(idx, module._export_codes).float()
    return rows * F.embedding(idx, module._export_scales)


def _int4_forward(module: nn.Embedding, idx: Tensor, block: int) -> Tensor:
    return _GatherBlockQuantized.apply(module._export_codes, idx,
                                       module._export_scales, block)


@contextlib.contextmanager
def embedding_export_mode(model: nn.Module, mode: str,
                          max_block: int = MAX_BLOCK
                          ) -> Iterator[Dict[str, str]]:
    """Make the model's word-embedding tables forward as integer look-ups
    (module docstring) until the block exits; the FP weights are untouched
    and the original forward is restored on exit (errors included).

    Args:
        model: the model to export.
        mode: 'float' (nothing changes), 'int8' or 'int4' ('auto' is
            resolved by the caller, :func:`ris_plugins.deploy.qdq.export_qdq`).
        max_block: largest int4 block (columns per scale).

    Yields:
        dict: ``{table name: 'int8' | 'int4 (block N)'}`` of what each
        table exports as (empty for 'float').

    Raises:
        ValueError: an unknown mode, a table with ``max_norm`` (its look-up
            rewrites the table) or non-finite values, naming the table.
    """
    if check_embedding_mode(mode) == 'auto':
        raise ValueError("embedding='auto' is resolved by export_qdq; pass "
                         "'float', 'int8' or 'int4'")
    done, patched = {}, []
    try:
        for name, table in (word_embedding_tables(model).items()
                            if mode != 'float' else ()):
            if table.max_norm is not None:
                raise ValueError(f'{name}: nn.Embedding with max_norm has '
                                 'no integer export')
            block = int4_block(table.embedding_dim, max_block) \
                if mode == 'int4' else None
            if block is None:
                codes, scales = quantize_rows(table.weight, 8, name=name)
                fwd = (lambda idx, _t=table: _int8_forward(_t, idx))
                done[name] = 'int8'
            else:
                codes, scales = quantize_rows(table.weight, 4, block, name)
                codes = pack_int4(codes)
                fwd = (lambda idx, _t=table, _b=block: _int4_forward(
                    _t, idx, _b))
                done[name] = f'int4 (block {block})'
            patched.append(table)
            # buffers become the exporter's initializers
            table.register_buffer('_export_codes', codes)
            table.register_buffer('_export_scales', scales)
            table.forward = fwd
        yield done
    finally:
        for table in patched:
            table.__dict__.pop('forward', None)
            table._buffers.pop('_export_codes', None)
            table._buffers.pop('_export_scales', None)
