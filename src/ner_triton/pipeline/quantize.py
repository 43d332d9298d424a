"""INT8 quantization of the FP32 ONNX model with ONNX Runtime.

Two variants:

* ``onnx_int8`` - **static QDQ** (explicit quantization: QuantizeLinear/DequantizeLinear pairs,
  the form TensorRT builds INT8 engines from). Calibrated with min-max on training sentences
  padded to one length, uint8 asymmetric activations, int8 symmetric per-channel weights. Only
  MatMuls with a constant weight and the word-embedding Gather are quantized: LayerNorm, Softmax,
  GELU, residual Adds, the activation x activation attention MatMuls and the classifier stay in
  float, and so do the MatMuls named in ``QuantSettings.keep_float``.
* ``onnx_int8_dynamic`` - ONNX Runtime's dynamic quantization (weights int8 per channel,
  activations quantized on the fly).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ner_triton.alignment import encode_texts
from ner_triton.data import Sentence
from ner_triton.schema import ATTENTION_MASK, CASING_IDS, INPUT_IDS, ONNX_INT8, ONNX_INT8_DYNAMIC

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


def static_plan(model: onnx.ModelProto, num_labels: int, keep_float: Sequence[str]) -> tuple[list[str], list[str]]:
    """Which nodes static QDQ quantizes, and which weight MatMuls it keeps in float (and why)."""
    keep = set(classifier_matmuls(model, num_labels))
    keep |= {n for n in weight_matmuls(model) if any(k in n for k in keep_float)}
    quantize = [n for n in weight_matmuls(model) if n not in keep] + embedding_gathers(model)
    return quantize, sorted(keep)


def matmul_sensitivity(fp32_path: Path, reader: PaddedCalibrationReader, candidates: Sequence[str]) -> dict[str, float]:
    """Relative error each weight MatMul would add if it alone were quantized, most sensitive first.

    For every candidate ``Y = X @ W`` the float model's real input activations ``X`` (calibration
    tokens, padding excluded) are fake-quantized exactly as the static recipe does (min-max uint8
    asymmetric for ``X``, symmetric int8 per output channel for ``W``) and the error is
    ``||Xq @ Wq - X @ W|| / ||X @ W||``. Large errors mark the layers worth keeping in float
    (typically FFN output projections, whose GELU inputs have outliers).
    """
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_path))
    weights = {i.name: i for i in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.name in set(candidates)]
    inputs = sorted({n.input[0] for n in nodes})
    present = {o.name for o in model.graph.output}
    model.graph.output.extend(
        helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in inputs if name not in present
    )
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    acts: dict[str, list[np.ndarray]] = {n: [] for n in inputs}
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        keep = feed[ATTENTION_MASK].reshape(-1).astype(bool)
        for name, value in zip(inputs, session.run(inputs, feed), strict=True):
            acts[name].append(value.reshape(-1, value.shape[-1])[keep])
    reader.rewind()
    errors = {}
    for node in nodes:
        x = np.concatenate(acts[node.input[0]]).astype(np.float64)
        w = numpy_helper.to_array(weights[node.input[1]]).astype(np.float64)
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        scale = (hi - lo) / 255.0 or 1.0
        zero = np.round(-lo / scale)
        xq = (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale
        ws = np.abs(w).max(axis=0) / 127.0
        ws[ws == 0] = 1.0
        wq = np.clip(np.round(w / ws), -127, 127) * ws
        ref = x @ w
        errors[node.name] = float(np.linalg.norm(xq @ wq - ref) / (np.linalg.norm(ref) or 1.0))
    return dict(sorted(errors.items(), key=lambda kv: -kv[1]))


def quantize_static_qdq(
    fp32_path: Path,
    output_dir: Path,
    tokenizer: Any,
    calibration: Sequence[Sentence],
    num_labels: int,
    length: int,
    keep_float: Sequence[str] = (),
    name: str = ONNX_INT8,
    keep_float_top: int = 0,
) -> Path:
    """Static INT8 QDQ model calibrated on ``calibration`` sentences; returns the path written.

    ``keep_float_top`` > 0 also keeps the that many most sensitive weight MatMuls (by
    :func:`matmul_sensitivity` on the calibration data) in float; the ranking is written to
    ``sensitivity.json`` beside the model.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    output_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(fp32_path))
    inputs = [i.name for i in model.graph.input]
    reader = PaddedCalibrationReader(tokenizer, [s.text for s in calibration], length, inputs)
    if keep_float_top > 0:
        candidates, _ = static_plan(model, num_labels, keep_float)
        ranking = matmul_sensitivity(fp32_path, reader, [c for c in candidates if c in set(weight_matmuls(model))])
        (output_dir / "sensitivity.json").write_text(json.dumps(ranking, indent=2) + "\n", encoding="utf-8")
        keep_float = (*keep_float, *list(ranking)[:keep_float_top])
    quantize, kept = static_plan(model, num_labels, keep_float)
    out = output_dir / name
    log.info("static QDQ: %d nodes quantized, %d weight MatMuls kept in float: %s", len(quantize), len(kept), kept)
    quantize_static(
        str(fp32_path),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gather"],
        nodes_to_quantize=quantize,
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "MatMulConstBOnly": True},
    )
    return out


def quantize_dynamic_int8(fp32_path: Path, output_dir: Path, name: str = ONNX_INT8_DYNAMIC) -> Path:
    """ONNX Runtime dynamic INT8 (per-channel int8 weights); returns the path written."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    output_dir.mkdir(parents=True, exist_ok=True)
    out = output_dir / name
    quantize_dynamic(str(fp32_path), str(out), per_channel=True, weight_type=QuantType.QInt8)
    return out
