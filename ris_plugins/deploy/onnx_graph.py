"""Passes over exported ONNX graphs: store the QDQ export's weights as
integers, and count the kernels ONNX Runtime chose.

Used by :func:`ris_plugins.deploy.qdq.export_qdq` (on the file the
TorchScript exporter wrote) and by the deployment tools (on ONNX Runtime's
optimised graph, ``SessionOptions.optimized_model_filepath``).
"""
import copy
from typing import Dict

import numpy as np

#: ONNX Runtime op types that run integer arithmetic.
INTEGER_KERNELS = ('QLinearConv', 'QLinearMatMul', 'QGemm', 'MatMulInteger',
                   'ConvInteger', 'MatMulIntegerToFloat',
                   'DynamicQuantizeMatMul', 'MatMulNBits', 'QAttention',
                   'DynamicQuantizeLSTM')
FLOAT_KERNELS = ('Conv', 'MatMul', 'Gemm', 'FusedConv', 'FusedMatMul',
                 'FusedGemm', 'NchwcConv')


def fold_weight_quantizers(graph_model, int4: bool = True) -> Dict[str, int]:
    """Replace every ``QuantizeLinear`` of a constant (the weights) by its
    integer result, in place, so the file stores int8 weights; with
    ``int4``, weights whose codes all lie in [-8, 7] (<= 4-bit
    quantizers) are stored as ONNX INT4 followed by a ``Cast`` to int8,
    which ONNX Runtime constant-folds at load time (the model's opset is
    raised to 21, the first with INT4).

    Returns:
        dict: ``{'int8': n, 'int4': n}`` weights folded.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = graph_model.graph
    inits = {i.name: i for i in graph.initializer}
    consts = {n.output[0]: n for n in graph.node if n.op_type == 'Constant'}

    producers = {o: n for n in graph.node for o in n.output}

    def value(name, depth=0):
        """The constant value of tensor ``name`` (initializer, Constant,
        or Cast / Identity / Round of one), else None."""
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            return numpy_helper.to_array(consts[name].attribute[0].t)
        node = producers.get(name)
        if node is None or depth > 4 or node.op_type not in (
                'Cast', 'Identity', 'Round'):
            return None
        v = value(node.input[0], depth + 1)
        if v is None or node.op_type == 'Identity':
            return v
        if node.op_type == 'Round':
            return np.rint(v)
        to = next(a.i for a in node.attribute if a.name == 'to')
        return v.astype(helper.tensor_dtype_to_np_dtype(to))

    counts = {'int8': 0, 'int4': 0}
    replace = {}  # id(QuantizeLinear node) -> Cast node or None
    for node in graph.node:
        if node.op_type != 'QuantizeLinear':
            continue
        x = value(node.input[0])
        scale, zp = value(node.input[1]), value(node.input[2])
        if x is None or scale is None or zp is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == 'axis'), 1)
        shape = [1] * x.ndim
        if scale.ndim:
            shape[axis] = -1
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(x / scale.reshape(shape)) + zp.reshape(shape),
                    info.min, info.max).astype(zp.dtype)
        out = node.output[0]
        if int4 and zp.dtype == np.int8 and q.min() >= -8 and q.max() <= 7:
            name = out + '_int4'
            import ml_dtypes  # onnx's own dependency: packed int4
            graph.initializer.append(numpy_helper.from_array(
                q.astype(ml_dtypes.int4), name))  # 2 weights per byte
            replace[id(node)] = helper.make_node('Cast', [name], [out],
                                                 to=TensorProto.INT8)
            counts['int4'] += 1
        else:
            graph.initializer.append(numpy_helper.from_array(q, out))
            replace[id(node)] = None
            counts['int8'] += 1
    nodes = []  # same order, so the graph stays topologically sorted
    for node in graph.node:
        if id(node) not in replace:
            nodes.append(node)
        elif replace[id(node)] is not None:
            nodes.append(replace[id(node)])
    nodes = [copy.deepcopy(n) for n in nodes]
    del graph.node[:]
    graph.node.extend(nodes)
    if counts['int4']:
        _raise_opset(graph_model, 21)
    _drop_unused(graph_model)
    onnx.checker.check_model(graph_model)
    return counts


def _raise_opset(graph_model, opset: int) -> None:
    from onnx import version_converter
    converted = version_converter.convert_version(graph_model, opset)
    del converted.graph.value_info[:]  # inferred shapes: only file size
    graph_model.CopyFrom(converted)


def _drop_unused(graph_model) -> None:
    """Remove initializers and Constant nodes nothing reads any more."""
    graph = graph_model.graph
    used = {i for n in graph.node for i in n.input}
    used |= {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for node in [n for n in graph.node if n.op_type == 'Constant'
                 and n.output[0] not in used]:
        graph.node.remove(node)


def kernel_counts(optimized_path: str) -> Dict[str, int]:
    """Op-type counts of an ONNX Runtime optimised graph
    (``SessionOptions.optimized_model_filepath``) for the integer and float
    Conv / MatMul / Gemm kernels: ``{op type: count}`` plus 'integer' and
    'float' totals."""
    import onnx
    ops = [n.op_type for n in onnx.load(optimized_path).graph.node]
    out = {t: ops.count(t) for t in INTEGER_KERNELS + FLOAT_KERNELS
           if t in ops}
    out['integer'] = sum(ops.count(t) for t in INTEGER_KERNELS)
    out['float'] = sum(ops.count(t) for t in FLOAT_KERNELS)
    return out
