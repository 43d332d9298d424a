"""How much faster an INT8 engine can be than the FP16 one, read from the graph the engine is built from.

In an explicitly quantized graph a MatMul runs in INT8 when both of its inputs come from a
``DequantizeLinear`` (TensorRT fuses Q/DQ into the GEMM); every other MatMul - and everything that is not a
MatMul - runs in the float type of the graph in both engines. If the INT8 GEMMs are ``int8_rate`` times
as fast as FP16 ones (2 on the Tensor Cores of Ampere and Hopper: dense INT8 TOPS are twice the FP16
TFLOPS) and GEMMs were all the time spent, the INT8 engine would be

    bound = 1 / ((1 - s) + s / int8_rate)

times as fast as the FP16 engine, ``s`` being the share of multiply-adds in INT8 GEMMs. LayerNorm,
softmax, GELU and Q/DQ kernels only lower the real ratio, so this is an upper bound; ``gpu_check``
reports the measured ratio next to it.

Multiply-adds are counted from the shapes of every MatMul's inputs on one ``[1, length]`` sequence (the
graph is run once with ONNX Runtime), so the attention score/context MatMuls - whose cost grows with the
sequence length - are counted at the length the goal is read at.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ner_triton.errors import ModelLoadError

# Dense INT8 over FP16 Tensor Core throughput (A100: 624 / 312 TOPS; H100/H200 SXM: 1979 / 989).
INT8_OVER_FP16_GEMM_RATE = 2.0


@dataclass(frozen=True)
class MatMulCost:
    """One MatMul: its multiply-adds on one sequence, and whether it runs in INT8."""

    name: str
    macs: int
    int8: bool
    weighted: bool  # the second input is a constant (a Linear layer) rather than an activation


@dataclass(frozen=True)
class SpeedBound:
    """The INT8 share of a graph's multiply-adds and the INT8-over-FP16 speed-up it allows."""

    length: int
    int8_macs: int
    total_macs: int
    int8_matmuls: int
    float_matmuls: int
    int8_rate: float = INT8_OVER_FP16_GEMM_RATE

    @property
    def int8_share(self) -> float:
        return self.int8_macs / self.total_macs if self.total_macs else 0.0

    @property
    def bound(self) -> float:
        """Upper bound of INT8 engine throughput over FP16 engine throughput (Amdahl on the GEMMs)."""
        s = self.int8_share
        return 1.0 / ((1.0 - s) + s / self.int8_rate)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "int8_share": round(self.int8_share, 4), "bound": round(self.bound, 3)}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def int8_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMuls whose two inputs both come from ``DequantizeLinear``: the GEMMs TensorRT runs in INT8."""
    producer = _producers(model)

    def dequantized(tensor: str) -> bool:
        node = producer.get(tensor)
        return node is not None and node.op_type == "DequantizeLinear"

    return [n.name for n in model.graph.node if n.op_type == "MatMul" and all(map(dequantized, n.input[:2]))]


def _constant(model: onnx.ModelProto, tensor: str) -> bool:
    """A constant, or the (quantized and) dequantized value of one."""
    inits = {i.name for i in model.graph.initializer}
    producer = _producers(model)
    while (node := producer.get(tensor)) is not None and node.op_type in ("DequantizeLinear", "QuantizeLinear"):
        tensor = node.input[0]
    return tensor in inits


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    infos = [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    return {v.name: v.type.tensor_type.elem_type for v in infos if v.type.tensor_type.elem_type}


def matmul_shapes(model: onnx.ModelProto, length: int) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """MatMul name -> shapes of its two inputs when the graph runs on one sequence of ``length`` tokens."""
    import onnxruntime as ort
    from onnx import helper

    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    if not matmuls:
        raise ModelLoadError("the graph has no MatMul: nothing to count (is this a transformer's ONNX file?).")
    types = _elem_types(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    wanted = sorted({t for n in matmuls for t in n.input[:2]})
    consts = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for tensor in wanted:
        if tensor in consts or tensor in present:
            continue
        if tensor not in types:
            raise ModelLoadError(f"cannot infer the type of MatMul input {tensor!r}; run onnx shape inference on "
                                 "the model and check that it is a valid ONNX graph.")  # fmt: skip
        probe.graph.output.append(helper.make_tensor_value_info(tensor, types[tensor], None))
    feed: dict[str, np.ndarray] = {}
    for value in model.graph.input:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        rank = len(value.type.tensor_type.shape.dim)
        if rank != 2:
            raise ModelLoadError(f"input {value.name!r} has rank {rank}: expected [batch, sequence] inputs.")
        feed[value.name] = np.ones((1, length), dtype=dtype)  # id 1 exists in every table; mask 1 = real token
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [t for t in wanted if t not in consts]
    values = dict(zip(names, session.run(names, feed), strict=True))
    shape = {**{t: v.shape for t, v in values.items()}, **consts}
    return {n.name: (tuple(shape[n.input[0]]), tuple(shape[n.input[1]])) for n in matmuls}


def matmul_costs(model: onnx.ModelProto, length: int) -> list[MatMulCost]:
    """Every MatMul's multiply-adds on one sequence of ``length`` tokens and whether it runs in INT8."""
    shapes = matmul_shapes(model, length)
    quantized = set(int8_matmuls(model))
    out = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        a, b = shapes[node.name]
        if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
            raise ModelLoadError(f"MatMul {node.name!r} has inputs {a} x {b}: only matrix products are counted.")
        batch = np.broadcast_shapes(a[:-2], b[:-2])
        macs = math.prod(batch) * a[-2] * a[-1] * b[-1]
        out.append(MatMulCost(node.name, int(macs), node.name in quantized, _constant(model, node.input[1])))
    return out


def speed_bound(
    model: onnx.ModelProto | Path, length: int = 128, int8_rate: float = INT8_OVER_FP16_GEMM_RATE
) -> SpeedBound:
    """The INT8 share of ``model``'s multiply-adds at ``length`` tokens and the speed-up bound it gives."""
    if isinstance(model, Path):
        if not model.is_file():
            raise ModelLoadError(f"{model} is missing; run `make build` first (it writes the ONNX models).")
        model = onnx.load(str(model))
    costs = matmul_costs(model, length)
    return SpeedBound(
        length=length,
        int8_macs=sum(c.macs for c in costs if c.int8),
        total_macs=sum(c.macs for c in costs),
        int8_matmuls=sum(c.int8 for c in costs),
        float_matmuls=sum(not c.int8 for c in costs),
        int8_rate=int8_rate,
    )


def qdq_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Where the Q/DQ nodes sit: QuantizeLinear nodes on weights (constants), on MatMul outputs and on other
    activations; DequantizeLinear nodes; MatMuls in all and in INT8."""
    producer = _producers(model)
    inits = {i.name for i in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    on_weights = [n for n in quantize if n.input[0] in inits]
    on_matmul_output = [n for n in quantize if (p := producer.get(n.input[0])) is not None and p.op_type == "MatMul"]
    return {
        "QuantizeLinear": len(quantize),
        "QuantizeLinear_on_weights": len(on_weights),
        "QuantizeLinear_on_MatMul_output": len(on_matmul_output),
        "QuantizeLinear_on_other_activations": len(quantize) - len(on_weights) - len(on_matmul_output),
        "DequantizeLinear": sum(n.op_type == "DequantizeLinear" for n in model.graph.node),
        "MatMul": sum(n.op_type == "MatMul" for n in model.graph.node),
        "int8_MatMul": len(int8_matmuls(model)),
    }
