"""ONNX export of the plain-tensor forward ``model(img, tokens, text_mask)``.

The exported graph has inputs ``img`` (B, 3, H, W) float32 (normalised, as
the data preprocessor hands it to the model), ``tokens`` (B, L) int64 and
``mask`` (B, L) int64, and one output ``logits`` (B, C, h, w) float32 (the
raw head output, C = 1 sigmoid or 2 argmax heads); B is dynamic, H, W and L
are fixed at export.

Exporter: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript-based
exporter). It exports every method (baseline, LAVT, CRIS, ETRIS ViT / RN,
BarLeRIa, HARIS, the mix configs) and lowers ``torch.fake_quantize_*`` to
QuantizeLinear / DequantizeLinear (:mod:`.qdq`). The dynamo exporter
(``torch.export``) was tried on the same models with torch 2.13 and fails
for BarLeRIa, ETRIS and HARIS (``torch.export`` cannot trace their CLIP / SAM
towers) and for the fake-quantize ops, so it is not used.
"""
import os
import os.path as osp
import tempfile
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from .patches import export_patches

INPUT_NAMES = ('img', 'tokens', 'mask')
OUTPUT_NAMES = ('logits', )
#: ONNX opset of the exported graphs (QuantizeLinear per axis needs >= 13).
OPSET = 17
Inputs = Tuple[Tensor, Tensor, Tensor]


def _import_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as err:  # pragma: no cover - env without extras
        raise ImportError('ONNX export needs the packages onnx and '
                          "onnxruntime: pip install 'ris_plugins[deploy]'"
                          ) from err


def check_inputs(inputs: Sequence[Tensor]) -> Inputs:
    """Validate ``(img, tokens, mask)`` for export or an ONNX run.

    Raises:
        ValueError: not three tensors, or a wrong rank, dtype or batch,
            naming the input and what it should be.
    """
    if len(inputs) != 3:
        raise ValueError(f'expected 3 inputs {INPUT_NAMES}, got '
                         f'{len(inputs)}')
    img, tokens, mask = inputs
    want = (('img', img, 4, (torch.float32, )),
            ('tokens', tokens, 2, (torch.int64, )),
            ('mask', mask, 2, (torch.int64, )))
    for name, t, rank, dtypes in want:
        if not isinstance(t, Tensor) or t.dim() != rank or \
                t.dtype not in dtypes:
            got = (f'{tuple(t.shape)} {t.dtype}' if isinstance(t, Tensor)
                   else type(t).__name__)
            raise ValueError(f'input {name!r} must be a {rank}-D '
                             f'{dtypes[0]} tensor, got {got}')
    if img.shape[1] != 3:
        raise ValueError(f"input 'img' must have 3 channels (B, 3, H, W), "
                         f'got {tuple(img.shape)}')
    if tokens.shape != mask.shape or tokens.shape[0] != img.shape[0]:
        raise ValueError(f"inputs disagree: img {tuple(img.shape)}, tokens "
                         f"{tuple(tokens.shape)}, mask {tuple(mask.shape)} "
                         '(same B; tokens and mask both (B, L))')
    return img, tokens, mask


class _TensorForward(nn.Module):
    """``model(img, tokens, mask)`` with ``mode='tensor'`` as a module, so
    the exporter sees exactly three positional inputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, img: Tensor, tokens: Tensor, mask: Tensor) -> Tensor:
        return self.model(img, tokens, mask)


def export_onnx(model: nn.Module, inputs: Sequence[Tensor], path: str,
                opset: int = OPSET, constant_folding: bool = True) -> str:
    """Export ``model(img, tokens, mask) -> logits`` to ``path``.

    The file is written to a temporary name and renamed, so a failed export
    leaves nothing at ``path``. Graph inputs the model does not read (e.g.
    ``mask`` for text encoders that ignore it) are kept, so every exported
    model has the same three inputs.

    Args:
        model: a ``RefSegmentor`` (FP, or fake-quantized inside
            :func:`ris_plugins.deploy.qdq.qdq_export_mode`), in eval mode.
        inputs: example ``(img, tokens, mask)`` (see :func:`check_inputs`);
            H, W and L are fixed by them, B stays dynamic.
        path: output ``.onnx`` file.
        opset: ONNX opset (>= 13).
        constant_folding: the exporter's constant folding; off for QDQ
            graphs, where it would fold each weight's QuantizeLinear ->
            DequantizeLinear back into a float constant.

    Returns:
        str: ``path``.

    Raises:
        ValueError: bad example inputs or a model in training mode.
    """
    _import_onnx()
    import onnx
    inputs = check_inputs(inputs)
    if model.training:
        raise ValueError('export needs model.eval() (BN / dropout in '
                         'training mode would be frozen into the graph)')
    out_dir = osp.dirname(osp.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix='.onnx.tmp')
    os.close(fd)
    dynamic = {n: {0: 'batch'} for n in INPUT_NAMES + OUTPUT_NAMES}
    try:
        with torch.no_grad(), export_patches():
            torch.onnx.export(
                _TensorForward(model).eval(), tuple(inputs), tmp,
                dynamo=False,
                opset_version=opset, input_names=list(INPUT_NAMES),
                output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic,
                do_constant_folding=constant_folding)
        graph_model = onnx.load(tmp)
        restore_unused_inputs(graph_model, inputs)
        onnx.save(graph_model, tmp)
        os.replace(tmp, path)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)
    return path


def restore_unused_inputs(graph_model, inputs: Inputs) -> None:
    """Add back graph inputs the TorchScript exporter dropped because the
    model never reads them (in place; ONNX allows unused inputs)."""
    from onnx import TensorProto, helper
    present = {i.name for i in graph_model.graph.input}
    types = {torch.float32: TensorProto.FLOAT, torch.int64: TensorProto.INT64}
    for pos, (name, t) in enumerate(zip(INPUT_NAMES, inputs)):
        if name in present:
            continue
        shape = ['batch'] + list(t.shape[1:])
        info = helper.make_tensor_value_info(name, types[t.dtype], shape)
        graph_model.graph.input.insert(pos, info)


def ort_session(path: str, threads: Optional[int] = None,
                optimized_path: Optional[str] = None):
    """An ONNX Runtime CPU session for ``path``.

    Args:
        threads: intra-op threads (None: ONNX Runtime's default).
        optimized_path: if given, ONNX Runtime writes the graph after its
            optimisations (QDQ fusion etc.) there.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ONNX Runtime cannot load it (naming the file).
    """
    _import_onnx()
    import onnxruntime as ort
    if not osp.isfile(path):
        raise FileNotFoundError(f'ONNX model not found: {path}')
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    try:
        return ort.InferenceSession(path, opts,
                                    providers=['CPUExecutionProvider'])
    except Exception as err:  # ORT raises its own pybind exception types
        raise ValueError(f'ONNX Runtime cannot load {path}: {err}') from err


def max_abs_diff(model: nn.Module, session, inputs: Sequence[Tensor]
                 ) -> float:
    """max |ORT logits - PyTorch logits| on the same inputs (float)."""
    from .ort_model import run_session
    img, tokens, mask = check_inputs(inputs)
    with torch.no_grad():
        ref = model(img, tokens, mask).float().numpy()
    out = run_session(session, img, tokens, mask)
    if out.shape != ref.shape:
        raise ValueError(f'ONNX output shape {out.shape} != PyTorch '
                         f'{ref.shape}')
    return float(np.abs(out - ref).max())
