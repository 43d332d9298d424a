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


def quantize_static_qdq(
    fp32_path: Path,
    output_dir: Path,
    tokenizer: Any,
    calibration: Sequence[Sentence],
    num_labels: int,
    length: int,
    keep_float: Sequence[str] = (),
    name: str = ONNX_INT8,
) -> Path:
    """Static INT8 QDQ model calibrated on ``calibration`` sentences; returns the path written."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    output_dir.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(fp32_path))
    quantize, kept = static_plan(model, num_labels, keep_float)
    inputs = [i.name for i in model.graph.input]
    reader = PaddedCalibrationReader(tokenizer, [s.text for s in calibration], length, inputs)
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
