"""Half precision for the GPU graphs: the FP16 comparison engine's source, and the float parts of the
TensorRT INT8 form.

TensorRT's strongly typed networks take their precision from the graph (TensorRT 11 builds nothing
else), so FP16 must be in the ONNX file. :func:`convert_to_fp16` turns every float tensor and initializer
into FP16 - Q/DQ scales included, which needs opset 19 (the graph is converted first, and its IR version raised
to the one opset 19 came with, 9) - and keeps the
inputs and outputs as they are (int64 ids in, FP32 logits out). Softmax and explicit reductions stay FP32
against overflow; LayerNormalization runs in FP16 (keeping it FP32 leaves its weights half, which ONNX
Runtime rejects). Applied to the INT8 QDQ graph it gives TensorRT's "FP16 high precision" form: INT8 GEMMs,
everything else FP16, instead of FP32.

On the default model (ONNX Runtime, CPU, CoNLL-2003 test): FP32 graph -> FP16 0.8823 -> 0.8823; the
INT8 TensorRT form (inputs-only Q/DQ, GELU-fed inputs centred) with FP32 float parts 0.8793, with FP16 float
parts 0.8807 (AMD EPYC).
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

log = logging.getLogger(__name__)

KEEP_FP32 = ("Softmax", "ReduceMean", "Pow", "Sqrt", "Erf")
OPSET = 19  # FP16 scales of QuantizeLinear/DequantizeLinear


def min_ir_version(model: onnx.ModelProto) -> int:
    """The lowest IR version that allows every opset ``model`` imports (opset 19 came with IR 9)."""
    return int(onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True))


def sort_topologically(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder ``model``'s nodes so each comes after the producers of its inputs (stable: a sorted graph keeps
    its order); in place, and returned. Raises ``ValueError`` on a cycle or an input nothing produces."""
    graph = model.graph
    ready = {"", *(i.name for i in graph.input), *(i.name for i in graph.initializer)}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in ready for i in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            missing = sorted({i for n in rest for i in n.input} - ready)
            raise ValueError(f"the graph cannot be sorted: {len(rest)} nodes wait for {missing[:5]}")
        pending = rest
    copies = [onnx.NodeProto() for _ in ordered]
    for copy, node in zip(copies, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    return model


def convert_to_fp16(source: Path, output: Path) -> Path:
    """Write the FP16 version of ``source`` to ``output`` (may be the same path); returns it."""
    from onnx import version_converter
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(source))
    if next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) < OPSET:
        model = version_converter.convert_version(model, OPSET)
    half = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=sorted({*DEFAULT_OP_BLOCK_LIST, *KEEP_FP32}), disable_shape_infer=True
    )
    half.ir_version = max(half.ir_version, min_ir_version(half))  # the version converter leaves it as it was
    sort_topologically(half)  # the converter appends its Casts after their readers (ONNX requires sorted nodes)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, str(output))
    log.info("FP16 graph: %s (%.1f MB)", output, output.stat().st_size / 1e6)
    return output
