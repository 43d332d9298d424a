"""INT8 quantization of the FP32 ONNX model with ONNX Runtime, one :class:`QuantRecipe` per target.

A recipe is data - the presets :meth:`QuantRecipe.cpu_qdq`, :meth:`QuantRecipe.tensorrt` and
:meth:`QuantRecipe.dynamic`, as Optimum names its configurations after the target - and
:func:`quantize` is the one function that applies any of them. :data:`RECIPES` says which recipe makes
which variant of the registry (:mod:`ner_triton.variants`). Three variants:

* ``onnx_int8`` - **static QDQ** (explicit quantization: QuantizeLinear/DequantizeLinear pairs,
  the form TensorRT builds INT8 engines from). Calibrated with min-max on training sentences
  padded to one length, uint8 asymmetric activations, int8 symmetric per-channel weights. Only
  MatMuls with a constant weight and the word-embedding Gather are quantized: LayerNorm, Softmax,
  GELU, residual Adds, the activation x activation attention MatMuls and the classifier stay in
  float, and so do the MatMuls named in ``QuantSettings.keep_float``.
* ``onnx_int8_trt`` - static QDQ in the form TensorRT accepts (the ``tensorrt`` recipe): int8 activations
  with zero point 0, Q/DQ on the *inputs* of every weighted MatMul and none on their outputs (TensorRT's
  explicit-quantization guidance: a Q/DQ on a GEMM's output makes it round the result to INT8 before the
  bias add), the embedding Gather and the classifier float. Symmetric int8 wastes half its range on the
  one-sided GELU output that feeds each FFN output projection, so that input is first centred on zero
  (:func:`center_inputs`: ``X - c`` per channel, ``c W`` folded into the bias), which brings those 6 MatMuls
  into INT8 too: 94.7% of the multiply-adds at 128 tokens (``gpu.bound``). The float parts are then converted
  to FP16, so the engine runs INT8 GEMMs and FP16 elsewhere instead of FP32. On the default model (CoNLL-2003
  test, ONNX Runtime): FP32 0.8823, this form 0.8807; GELU-fed MatMuls float 0.8828 (63.1% INT8), quantized
  without centring 0.8763 (docs/int8.md).
  TensorRT builds its INT8 engine from this file; ONNX Runtime scores it on the CPU, so every build
  reports what the GPU engine's quantization costs before a GPU is involved.
* ``onnx_int8_dynamic`` - ONNX Runtime's dynamic quantization (weights int8 per channel,
  activations quantized on the fly).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ner_triton.alignment import encode_texts
from ner_triton.data import Sentence
from ner_triton.pipeline.fp16 import convert_to_fp16
from ner_triton.schema import ATTENTION_MASK, CASING_IDS, INPUT_IDS
from ner_triton.variants import INT8, INT8_DYNAMIC, TRT, Variant

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


def input_channel_range(
    fp32_path: Path, reader: PaddedCalibrationReader, tensors: Sequence[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (min, max) of float activations ``tensors`` over the calibration tokens (padding excluded)."""
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
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    reader.rewind()
    while (feed := reader.get_next()) is not None:
        keep = feed[ATTENTION_MASK].reshape(-1).astype(bool)
        for name, value in zip(tensors, session.run(list(tensors), feed), strict=True):
            rows = value.reshape(-1, value.shape[-1])[keep]
            lo, hi = rows.min(axis=0), rows.max(axis=0)
            out[name] = (lo, hi) if name not in out else (np.minimum(out[name][0], lo), np.maximum(out[name][1], hi))
    reader.rewind()
    return out


def input_channel_max(
    fp32_path: Path, reader: PaddedCalibrationReader, tensors: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-channel max |x| of float activations ``tensors`` over the calibration tokens (padding excluded)."""
    ranges = input_channel_range(fp32_path, reader, tensors)
    return {name: np.maximum(-lo, hi) for name, (lo, hi) in ranges.items()}


def matmuls_by_input(model: onnx.ModelProto, names: set[str]) -> dict[str, list[onnx.NodeProto]]:
    """The MatMul nodes named in ``names``, grouped by the input they read (q/k/v share one)."""
    groups: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.name in names:
            groups.setdefault(node.input[0], []).append(node)
    return groups


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
    groups = matmuls_by_input(model, wanted)
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


def _bias_add(
    after: Sequence[onnx.NodeProto], output: str, inits: dict[str, onnx.TensorProto], size: int
) -> tuple[onnx.NodeProto, str] | None:
    """The ``Add`` of a constant ``[size]`` bias that is the only reader of a MatMul's ``output``, and its bias."""
    if len(after) != 1 or after[0].op_type != "Add" or len(after[0].input) != 2:
        return None
    other = after[0].input[1] if after[0].input[0] == output else after[0].input[0]
    if other not in inits or list(inits[other].dims) != [size]:
        return None
    return after[0], other


def center_inputs(
    fp32_path: Path,
    reader: PaddedCalibrationReader,
    matmuls: Sequence[str],
    output: Path,
    per_channel: bool = True,
) -> Path:
    """Shift the input ``X`` of each of ``matmuls`` to be centred on zero, the shift folded into the bias.

    Symmetric int8 (zero point 0, all TensorRT accepts) spends half its codes on negative values; a GELU
    output lies in about [-0.17, max], so quantizing it wastes one of the 8 bits. With ``c`` the midpoint
    of ``X``'s calibrated range (per input channel, or one for the tensor), the MatMul reads ``X - c``, whose
    range is symmetric, and ``X W + b = (X - c) W + (b + c W)``: the bias absorbs the shift, so the float
    model computes the same function. One elementwise ``Sub`` per input (float; TensorRT can fuse it with the
    GELU before it - not seen on a GPU yet); the bias ``Add`` that follows the MatMul is updated, or one is added.
    """
    from onnx import helper, numpy_helper

    model = onnx.load(str(fp32_path))
    wanted = set(matmuls)
    groups = matmuls_by_input(model, wanted)
    ranges = input_channel_range(fp32_path, reader, sorted(groups))
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    position = {id(n): k for k, n in enumerate(model.graph.node)}
    inserts: list[tuple[int, onnx.NodeProto]] = []
    for x_name, nodes in groups.items():
        lo, hi = ranges[x_name]
        shift = (lo + hi) / 2 if per_channel else np.full_like(lo, (lo.min() + hi.max()) / 2)
        centred, shift_name = f"{x_name}_centred", f"{x_name}_shift"
        model.graph.initializer.append(numpy_helper.from_array(shift.astype(np.float32), shift_name))
        inserts.append(
            (min(position[id(n)] for n in nodes), helper.make_node("Sub", [x_name, shift_name], [centred],
                                                                   name=f"{x_name}/Centre/Sub"))
        )  # fmt: skip
        for node in nodes:
            node.input[0] = centred
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            fold = (shift.astype(np.float64) @ weight).astype(np.float32)
            bias_add = _bias_add(consumers.get(node.output[0], []), node.output[0], inits, fold.size)
            if bias_add is not None:
                add_node, bias = bias_add
                new_bias = f"{bias}_centred_{node.name}"
                model.graph.initializer.append(
                    numpy_helper.from_array(numpy_helper.to_array(inits[bias]).astype(np.float32) + fold, new_bias)
                )
                add_node.input[:] = [new_bias if i == bias else i for i in add_node.input]
            else:  # no bias Add to fold into: add one
                raw, fold_name = f"{node.output[0]}_centred", f"{node.name}_centre_fold"
                model.graph.initializer.append(numpy_helper.from_array(fold, fold_name))
                add = helper.make_node("Add", [raw, fold_name], [node.output[0]], name=f"{node.name}/Centre/Add")
                node.output[0] = raw
                inserts.append((position[id(node)] + 1, add))
    nodes_out = list(model.graph.node)
    for index, extra in sorted(inserts, key=lambda t: -t[0]):  # from the back, so indices stay valid
        nodes_out.insert(index, extra)
    del model.graph.node[:]
    model.graph.node.extend(nodes_out)
    onnx.save(model, str(output))
    log.info("centred the inputs of %d MatMuls (%d input groups, %s)", len(wanted), len(groups),
             "per channel" if per_channel else "per tensor")  # fmt: skip
    return output


@dataclass(frozen=True)
class QuantRecipe:
    """How one INT8 form is made. Use a preset; each field is one decision, named for what it does."""

    name: str
    static: bool  # calibrated QDQ (False: ONNX Runtime's dynamic quantization, weights only ahead of time)
    activation_symmetric: bool = False  # int8 activations with zero point 0 (TensorRT accepts nothing else)
    quantize_embedding_gather: bool = True  # the word-embedding table in int8 too
    keep_gelu_matmuls_float: bool = False  # symmetric int8 wastes half its range on GELU's one-sided output
    centre_gelu_inputs: bool = False  # ... unless that input is shifted to be centred (:func:`center_inputs`)
    quantize_matmul_outputs: bool = True  # Q/DQ on each quantized MatMul's output too (ONNX Runtime's default)
    float_parts_fp16: bool = False  # what stays float runs in FP16 (a GPU engine's "FP16 high precision")

    @classmethod
    def cpu_qdq(cls) -> QuantRecipe:
        """ONNX Runtime on a CPU: uint8 asymmetric activations, int8 per-channel weights, Gather quantized."""
        return cls("cpu_qdq", static=True)

    @classmethod
    def tensorrt(cls) -> QuantRecipe:
        """TensorRT's explicit quantization: symmetric int8 on the inputs of every weighted MatMul (none on their
        outputs), the GELU-fed ones' input centred first; the Gather and the classifier float; float parts FP16."""
        return cls(
            "tensorrt",
            static=True,
            activation_symmetric=True,
            quantize_embedding_gather=False,
            centre_gelu_inputs=True,
            quantize_matmul_outputs=False,
            float_parts_fp16=True,
        )

    @classmethod
    def dynamic(cls) -> QuantRecipe:
        """ONNX Runtime dynamic INT8: per-channel int8 weights, activations quantized on the fly."""
        return cls("dynamic", static=False)


# Which recipe makes which variant of the registry.
RECIPES: dict[str, QuantRecipe] = {
    INT8.key: QuantRecipe.cpu_qdq(),
    TRT.key: QuantRecipe.tensorrt(),
    INT8_DYNAMIC.key: QuantRecipe.dynamic(),
}


@dataclass(frozen=True)
class Calibration:
    """What static recipes calibrate on: real sentences padded to one length, and the model's label count."""

    tokenizer: Any
    sentences: Sequence[Sentence]
    num_labels: int
    length: int
    keep_float: tuple[str, ...] = ()  # MatMul names (or substrings) kept in float on top of the recipe's
    smooth_alpha: float | None = None  # SmoothQuant before quantizing (None: off)


def quantize(recipe: QuantRecipe, fp32_path: Path, output: Path, calibration: Calibration | None = None) -> Path:
    """Apply ``recipe`` to the FP32 model; writes ``output`` and returns it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if not recipe.static:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32_path), str(output), per_channel=True, weight_type=QuantType.QInt8)
        return output
    if calibration is None:
        raise ValueError(f"the {recipe.name} recipe is static: it needs calibration data")
    staged = output.with_name(f"fp32_{output.name}") if recipe.float_parts_fp16 else output
    _static_qdq(recipe, fp32_path, staged, calibration)
    if recipe.float_parts_fp16:
        convert_to_fp16(staged, output)
        staged.unlink()
    return output


def quantize_variant(variant: Variant, fp32_path: Path, output_dir: Path, calibration: Calibration) -> Path:
    """``variant``'s file (``output_dir/variant.onnx_file``) by its recipe in :data:`RECIPES`."""
    return quantize(RECIPES[variant.key], fp32_path, output_dir / variant.onnx_file, calibration)


def _static_qdq(recipe: QuantRecipe, fp32_path: Path, out: Path, calibration: Calibration) -> Path:
    """Static QDQ model calibrated with min-max on ``calibration``; with ``smooth_alpha`` the float model is
    first smoothed (:func:`smooth_quant`) on the same data."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(fp32_path))
    inputs = [i.name for i in model.graph.input]
    reader = PaddedCalibrationReader(calibration.tokenizer, [s.text for s in calibration.sentences],
                                     calibration.length, inputs)  # fmt: skip
    keep_float = calibration.keep_float
    if recipe.keep_gelu_matmuls_float:
        keep_float = (*keep_float, *gelu_output_matmuls(model))
    nodes, kept = static_plan(model, calibration.num_labels, keep_float, gathers=recipe.quantize_embedding_gather)
    source = fp32_path
    staged: list[Path] = []
    if calibration.smooth_alpha is not None:
        matmuls = [n for n in nodes if n in set(weight_matmuls(model))]
        source = smooth_quant(
            fp32_path, reader, matmuls, calibration.smooth_alpha, out.with_name(f"smoothed_{out.name}")
        )
        staged.append(source)
    if recipe.centre_gelu_inputs:
        gelu_fed = [n for n in gelu_output_matmuls(model) if n in set(nodes)]
        source = center_inputs(source, reader, gelu_fed, out.with_name(f"centred_{out.name}"))
        staged.append(source)
    log.info("%s: %d nodes quantized, %d weight MatMuls kept in float: %s", recipe.name, len(nodes), len(kept), kept)
    quantize_static(
        str(source),
        str(out),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gather"] if recipe.quantize_embedding_gather else ["MatMul"],
        nodes_to_quantize=nodes,
        per_channel=True,
        reduce_range=False,
        activation_type=QuantType.QInt8 if recipe.activation_symmetric else QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={
            "ActivationSymmetric": recipe.activation_symmetric,
            "WeightSymmetric": True,
            "MatMulConstBOnly": True,
            **({} if recipe.quantize_matmul_outputs else {"OpTypesToExcludeOutputQuantization": ["MatMul"]}),
        },
    )
    for path in staged:
        path.unlink()
    return out
