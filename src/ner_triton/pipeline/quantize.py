"""INT8 quantization of the FP32 ONNX model with ONNX Runtime.

Two variants:

* ``onnx_int8`` - **static QDQ** (explicit quantization: QuantizeLinear/DequantizeLinear pairs,
  the form TensorRT builds INT8 engines from). Calibrated with min-max on training sentences
  padded to one length, uint8 asymmetric activations, int8 symmetric per-channel weights. Only
  MatMuls with a constant weight and the word-embedding Gather are quantized: LayerNorm, Softmax,
  GELU, residual Adds, the activation x activation attention MatMuls and the classifier stay in
  float, and so do the MatMuls named in ``QuantSettings.keep_float``.
* ``onnx_int8_trt`` - static QDQ in the form TensorRT accepts (``symmetric=True``): int8
  activations with zero point 0, the embedding Gather float. Symmetric int8 cannot represent the
  one-sided GELU output that feeds each FFN output projection (half the range is wasted on values
  that never occur): quantizing those 6 MatMuls cost ~7.7 F1 points on validation, so they stay
  float (:func:`gelu_output_matmuls`; -0.2 points then). The float parts are then converted to FP16
  (:func:`quantize_tensorrt_int8`), so the engine runs INT8 GEMMs and FP16 elsewhere instead of FP32.
  TensorRT builds its INT8 engine from this file; ONNX Runtime scores it on the CPU, so every build
  reports what the GPU engine's quantization costs before a GPU is involved.
* ``onnx_int8_dynamic`` - ONNX Runtime's dynamic quantization (weights int8 per channel,
  activations quantized on the fly).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ner_triton.alignment import encode_texts
from ner_triton.data import Sentence
from ner_triton.schema import ATTENTION_MASK, CASING_IDS, INPUT_IDS, ONNX_INT8, ONNX_INT8_DYNAMIC, ONNX_INT8_TRT

log = logging.getLogger(__name__)


class PaddedCalibrationReader:
    """Calibration batches of real sentences, each padded (or truncated) to one fixed length.

    ONNX Runtime's histogram calibrators fail on batches of different sequence lengths, so every
    batch has shape ``[batch, length]``.
    """

    def __init__(self, tokenizer: Any, texts: Sequence[str], length: int, input_names: Sequence[str], batch: int = 16):
        self.batches: list[dict[str, np.ndarray]] = []
        encs = encode_texts(tokenizer, texts, length)
        for start in range(0, len(encs), batch):
            part = encs[start : start + batch]
            arrays = {n: np.zeros((len(part), length), dtype=np.int64) for n in (INPUT_IDS, ATTENTION_MASK, CASING_IDS)}
            for i, e in enumerate(part):
                arrays[INPUT_IDS][i, : len(e)] = e.input_ids
                arrays[ATTENTION_MASK][i, : len(e)] = 1
                arrays[CASING_IDS][i, : len(e)] = e.casing_ids
            self.batches.append({n: arrays[n] for n in input_names})
        self._it: Iterator[dict[str, np.ndarray]] = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of MatMul nodes whose second input is a constant weight (Linear layers)."""
    inits = {i.name for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits]


def classifier_matmuls(model: onnx.ModelProto, num_labels: int) -> list[str]:
    """Weight MatMuls that produce the label logits (last dimension == number of labels)."""
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and n.input[1] in dims and dims[n.input[1]][-1] == num_labels
    ]


def embedding_gathers(model: onnx.ModelProto, min_rows: int = 1000) -> list[str]:
    """Gather nodes that look up a large constant table (the word embeddings)."""
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "Gather" and n.input[0] in dims and dims[n.input[0]][0] >= min_rows
    ]


def gelu_output_matmuls(model: onnx.ModelProto) -> list[str]:
    """Weight MatMuls that read a GELU output (the FFN output projections): their input is produced by
    a ``Gelu`` node or by the ``Mul`` that ends the exported erf-GELU."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def is_gelu(node: onnx.NodeProto | None) -> bool:
        name = node.name.lower() if node is not None else ""
        return node is not None and (node.op_type in ("Gelu", "FastGelu") or "act_fn" in name or "gelu" in name)

    matmuls = set(weight_matmuls(model))
    return [n.name for n in model.graph.node if n.name in matmuls and is_gelu(producer.get(n.input[0]))]


def static_plan(
    model: onnx.ModelProto, num_labels: int, keep_float: Sequence[str], gathers: bool = True
) -> tuple[list[str], list[str]]:
    """Which nodes static QDQ quantizes, and which weight MatMuls it keeps in float (and why)."""
    keep = set(classifier_matmuls(model, num_labels))
    keep |= {n for n in weight_matmuls(model) if any(k in n for k in keep_float)}
    quantize = [n for n in weight_matmuls(model) if n not in keep] + (embedding_gathers(model) if gathers else [])
    return quantize, sorted(keep)


def input_channel_max(
    fp32_path: Path, reader: PaddedCalibrationReader, tensors: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-channel max |x| of float activations ``tensors`` over the calibration tokens (padding excluded)."""
    import onnxruntime as ort
    from onnx import helper

    model = onnx.load(str(fp32_path))
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(
        helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in tensors if name not in present
    )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    out: dict[str, np.ndarray] = {}
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        keep = feed[ATTENTION_MASK].reshape(-1).astype(bool)
        for name, value in zip(tensors, session.run(list(tensors), feed), strict=True):
            amax = np.abs(value.reshape(-1, value.shape[-1])[keep]).max(axis=0)
            out[name] = amax if name not in out else np.maximum(out[name], amax)
    reader.rewind()
    return out


def smooth_quant(
    fp32_path: Path, reader: PaddedCalibrationReader, matmuls: Sequence[str], alpha: float, output: Path
) -> Path:
    """SmoothQuant (Xiao et al., 2023): move activation outliers into the weights before quantizing.

    For each group of weight MatMuls sharing an input ``X`` (q/k/v share one), per input channel
    ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)``; the MatMuls then read ``X * (1/s)`` (one
    elementwise Mul, kept float) and use ``diag(s) @ W``. The float model computes the same
    function; per-tensor activation quantization loses far less on the flattened ``X / s``.
    """
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_path))
    wanted = set(matmuls)
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.name in wanted:
            groups.setdefault(node.input[0], []).append(node)
    amax = input_channel_max(fp32_path, reader, sorted(groups))
    inits = {i.name: i for i in model.graph.initializer}
    position = {id(n): k for k, n in enumerate(model.graph.node)}
    inserts = []
    for x_name, nodes in groups.items():
        ws = [numpy_helper.to_array(inits[n.input[1]]) for n in nodes]
        wmax = np.max(np.stack([np.abs(w).max(axis=1) for w in ws]), axis=0)
        scale = np.power(np.maximum(amax[x_name], 1e-5), alpha) / np.power(np.maximum(wmax, 1e-5), 1.0 - alpha)
        scale = np.clip(scale, 1e-3, 1e3).astype(np.float32)
        smoothed, inv = f"{x_name}_smoothed", f"{x_name}_smooth_inv"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / scale).astype(np.float32), inv))
        for node, w in zip(nodes, ws, strict=True):
            node.input[0] = smoothed
            inits[node.input[1]].CopyFrom(
                numpy_helper.from_array((w * scale[:, None]).astype(np.float32), node.input[1])
            )
        mul = helper.make_node("Mul", [x_name, inv], [smoothed], name=f"{x_name}/SmoothQuant/Mul")
        inserts.append((min(position[id(n)] for n in nodes), mul))
    nodes_out = list(model.graph.node)
    for index, mul in sorted(inserts, key=lambda t: -t[0]):  # from the back, so indices stay valid
        nodes_out.insert(index, mul)
    del model.graph.node[:]
    model.graph.node.extend(nodes_out)
    onnx.save(model, str(output))
    log.info("SmoothQuant alpha=%.2f on %d input groups (%d MatMuls)", alpha, len(groups), len(wanted))
    return output


def quantize_static_qdq(
    fp32_path: Path,
    output_dir: Path,
    tokenizer: Any,
    calibration: Sequence[Sentence],
    num_labels: int,
    length: int,
    keep_float: Sequence[str] = (),
    name: str = ONNX_INT8,
    smooth_alpha: float | None = None,
    symmetric: bool = False,
) -> Path:
    """Static INT8 QDQ model calibrated on ``calibration`` sentences; returns the path written.

    With ``smooth_alpha`` the float model is first smoothed (:func:`smooth_quant`) on the same
    calibration data, then quantized. ``symmetric=True`` writes the TensorRT form: int8
    activations with zero point 0 (TensorRT accepts only symmetric quantization), no quantized
    Gather, and the GELU-fed MatMuls kept float.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    output_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(fp32_path))
    inputs = [i.name for i in model.graph.input]
    reader = PaddedCalibrationReader(tokenizer, [s.text for s in calibration], length, inputs)
    if symmetric:
        keep_float = (*keep_float, *gelu_output_matmuls(model))
    quantize, kept = static_plan(model, num_labels, keep_float, gathers=not symmetric)
    source = fp32_path
    if smooth_alpha is not None:
        matmuls = [n for n in quantize if n in set(weight_matmuls(model))]
        source = smooth_quant(fp32_path, reader, matmuls, smooth_alpha, output_dir / f"smoothed_{name}")
    out = output_dir / name
    log.info("static QDQ: %d nodes quantized, %d weight MatMuls kept in float: %s", len(quantize), len(kept), kept)
    quantize_static(
        str(source),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul"] if symmetric else ["MatMul", "Gather"],
        nodes_to_quantize=quantize,
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True, "MatMulConstBOnly": True},
    )
    if source != fp32_path:
        source.unlink()
    return out


def quantize_tensorrt_int8(
    fp32_path: Path,
    output_dir: Path,
    tokenizer: Any,
    calibration: Sequence[Sentence],
    num_labels: int,
    length: int,
    keep_float: Sequence[str] = (),
    smooth_alpha: float | None = None,
) -> Path:
    """The TensorRT INT8 form: symmetric static QDQ (:func:`quantize_static_qdq`), float parts in FP16."""
    from ner_triton.gpu.fp16 import convert_to_fp16

    staged = quantize_static_qdq(
        fp32_path, output_dir, tokenizer, calibration, num_labels, length, keep_float,
        name=f"fp32_{ONNX_INT8_TRT}", smooth_alpha=smooth_alpha, symmetric=True,
    )  # fmt: skip
    out = convert_to_fp16(staged, output_dir / ONNX_INT8_TRT)
    staged.unlink()
    return out


def quantize_dynamic_int8(fp32_path: Path, output_dir: Path, name: str = ONNX_INT8_DYNAMIC) -> Path:
    """ONNX Runtime dynamic INT8 (per-channel int8 weights); returns the path written."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / name
    quantize_dynamic(str(fp32_path), str(out), per_channel=True, weight_type=QuantType.QInt8)
    return out
