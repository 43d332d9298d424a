"""What the TensorRT INT8 form and the GPU check are, checked without a GPU: where Q/DQ sit, the centring shift
of the GELU-fed inputs, the INT8 share and speed bound, IR version and node order of the FP16 graphs, engine
I/O types, TensorRT release checks, the pins, the goals and the CUDA binding choice."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tomllib
from onnx import TensorProto, helper, numpy_helper

from ner_triton.errors import EngineError
from ner_triton.gpu.bound import SpeedBound, matmul_costs, qdq_counts, speed_bound
from ner_triton.gpu.check import SHARE_OF_BOUND, goals
from ner_triton.gpu.manifest import SERVING_TENSORRT, check_compatible, release
from ner_triton.gpu.runner import check_io_dtypes
from ner_triton.pipeline.fp16 import min_ir_version, sort_topologically
from ner_triton.pipeline.quantize import center_inputs, gelu_output_matmuls, weight_matmuls

ROOT = Path(__file__).resolve().parents[2]
# TensorRT release of each NGC tritonserver tag the serving image may use (NGC release notes).
NGC_TENSORRT = {"24.10": "10.5.0"}


def _graph(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], opset: int = 19) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", "sequence", "labels"])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def qdq_toy() -> onnx.ModelProto:
    """ids -> table [50, 8] -> X; X (int8 Q/DQ) @ W int8 [8, 16] (INT8); X @ X^T (float): one of each kind."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(size=(50, 8)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.integers(-127, 128, (8, 16)).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.full(16, 0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.zeros(16, np.int8), "w_zero"),
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["x"], name="embed"),
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], name="x/Q"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="x/DQ"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], name="w/DQ", axis=1),
        helper.make_node("MatMul", ["x_dq", "w"], ["y"], name="dense"),
        helper.make_node("Transpose", ["x"], ["xt"], name="t", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["x", "xt"], ["scores"], name="scores"),
        helper.make_node("ReduceSum", ["scores"], ["s"], name="sum", keepdims=1),
        helper.make_node("Add", ["y", "s"], ["logits"], name="out"),
    ]
    return _graph(nodes, inits)


def test_multiply_adds_are_counted_per_matmul_kind_at_the_sequence_length() -> None:
    costs = {c.name: c for c in matmul_costs(qdq_toy(), 10)}
    assert costs["dense"].macs == 10 * 8 * 16 and costs["dense"].int8 and costs["dense"].weighted
    assert costs["scores"].macs == 10 * 8 * 10 and not costs["scores"].int8 and not costs["scores"].weighted
    bound = speed_bound(qdq_toy(), 10)
    assert (bound.int8_macs, bound.total_macs, bound.int8_matmuls, bound.float_matmuls) == (1280, 2080, 1, 1)
    assert qdq_counts(qdq_toy())["QuantizeLinear_on_MatMul_output"] == 0


def test_speed_bound_is_amdahl_on_the_int8_share() -> None:
    # The figures for the old TensorRT form: 63% of the multiply-adds in INT8 -> 1.46x at best.
    assert SpeedBound(128, 63, 100, 30, 18).bound == pytest.approx(1 / (0.37 + 0.63 / 2))
    assert round(SpeedBound(128, 63, 100, 30, 18).bound, 2) == 1.46
    assert SpeedBound(128, 100, 100, 1, 0).bound == 2.0 and SpeedBound(128, 0, 100, 0, 1).bound == 1.0
    assert SpeedBound(128, 50, 100, 1, 1, int8_rate=4.0).bound == pytest.approx(1 / (0.5 + 0.125))


def test_goals_compare_the_measured_ratio_with_85_percent_of_the_bound() -> None:
    bound = SpeedBound(128, 95, 100, 36, 13)
    rows = goals(0.3, 0.9 * bound.bound, bound, 0.8)
    assert [r.verdict for r in rows] == ["met", "met", "MISSED"]
    assert rows[1].target == round(SHARE_OF_BOUND * bound.bound, 3)
    assert "INT8 share of multiply-adds 95.0%" in rows[1].line()
    assert [r.verdict for r in goals(0.7, 0.5, bound, None)] == ["MISSED", "MISSED", "not measured"]
    assert [r.verdict for r in goals(None, None, bound, None)] == ["not measured"] * 3


def biased_dense(with_bias: bool) -> onnx.ModelProto:
    """ids -> table -> (x - 1)^2 (one-sided, like GELU) -> MatMul W [+ bias]: a GELU-fed dense layer in small."""
    rng = np.random.default_rng(1)
    inits = [
        numpy_helper.from_array(rng.normal(size=(50, 8)).astype(np.float32), "table"),
        numpy_helper.from_array(rng.normal(size=(8, 4)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["x"], name="embed"),
        helper.make_node("Mul", ["x", "x"], ["act"], name="act_fn/Mul"),
        helper.make_node("MatMul", ["act", "w"], ["y" if with_bias else "logits"], name="output/dense/MatMul"),
    ]
    if with_bias:
        nodes.append(helper.make_node("Add", ["y", "b"], ["logits"], name="output/dense/Add"))
    model = _graph(nodes, inits, opset=17)
    model.graph.input.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["b", "s"]))
    return model


class Reader:
    """Calibration batches with an attention mask (what :func:`center_inputs` reads)."""

    def __init__(self) -> None:
        rng = np.random.default_rng(2)
        self.batches = [{"input_ids": rng.integers(0, 50, (4, 6)), "attention_mask": np.ones((4, 6), np.int64)}]
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("per_channel", [True, False])
def test_centring_keeps_the_function_and_centres_the_input(tmp_path: Path, with_bias: bool, per_channel: bool) -> None:
    source = tmp_path / "fp32.onnx"
    onnx.save(biased_dense(with_bias), str(source))
    assert gelu_output_matmuls(onnx.load(str(source))) == ["output/dense/MatMul"]
    out = center_inputs(source, Reader(), ["output/dense/MatMul"], tmp_path / "centred.onnx", per_channel)  # type: ignore[arg-type]
    centred = onnx.load(str(out))
    onnx.checker.check_model(centred, full_check=True)
    (matmul,) = [n for n in centred.graph.node if n.op_type == "MatMul"]
    assert matmul.input[0] == "act_centred"
    feed = {"input_ids": np.random.default_rng(3).integers(0, 50, (3, 7)), "attention_mask": np.ones((3, 7), np.int64)}
    want = ort.InferenceSession(str(source)).run(["logits"], feed)[0]
    model = onnx.load(str(out))
    model.graph.output.append(helper.make_tensor_value_info("act_centred", TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString())
    got, act = session.run(["logits", "act_centred"], feed)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    rows = session.run(["act_centred"], Reader().batches[0])[0].reshape(-1, act.shape[-1])
    if per_channel:  # every channel's calibrated range is centred on zero
        np.testing.assert_allclose(rows.max(axis=0), -rows.min(axis=0), rtol=1e-5, atol=1e-5)
    else:
        assert rows.max() == pytest.approx(-rows.min(), rel=1e-5, abs=1e-5)
    assert np.isfinite(act).all()


def test_sort_topologically_orders_nodes_after_their_inputs() -> None:
    model = qdq_toy()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(model)
    sort_topologically(model)
    onnx.checker.check_model(model, full_check=True)
    model.graph.node.append(helper.make_node("Relu", ["nowhere"], ["r"], name="orphan"))
    with pytest.raises(ValueError, match=r"cannot be sorted.*nowhere"):
        sort_topologically(model)


def test_min_ir_version_follows_the_opset() -> None:
    assert min_ir_version(qdq_toy()) == 9  # opset 19 came with IR 9
    assert min_ir_version(biased_dense(True)) == 8  # opset 17


def test_tensorrt_versions_compare_on_major_minor_patch() -> None:
    assert release("10.5.0") == release("10.5.0.18") == release("10.5.0.post1") == (10, 5, 0)
    with pytest.raises(EngineError, match="not a TensorRT version"):
        release("ten")
    from test_gpu_path import manifest

    check_compatible(manifest(tensorrt_version="10.5.0"), "10.5.0.18", "NVIDIA H200", "9.0")
    with pytest.raises(EngineError, match=r"TensorRT 10\.5\.0 built it, this is TensorRT 10\.4\.0"):
        check_compatible(manifest(tensorrt_version="10.5.0"), "10.4.0", "NVIDIA H200", "9.0")


def test_runner_refuses_an_engine_with_other_io_types() -> None:
    inputs = ["input_ids", "attention_mask"]
    check_io_dtypes({"input_ids": np.int64, "attention_mask": np.int64, "logits": np.float32}, inputs)
    with pytest.raises(EngineError, match=r"input 'attention_mask' is int32, not int64.*ner-engine"):
        check_io_dtypes({"input_ids": np.int64, "attention_mask": np.int32, "logits": np.float32}, inputs)
    with pytest.raises(EngineError, match=r"output 'logits' is float16, not float32"):
        check_io_dtypes({"input_ids": np.int64, "attention_mask": np.int64, "logits": np.float16}, inputs)
    with pytest.raises(EngineError, match=r"no 'logits' output"):
        check_io_dtypes({"input_ids": np.int64, "attention_mask": np.int64, "scores": np.float32}, inputs)


def test_gpu_extra_pins_the_serving_images_tensorrt_exactly() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = {re.split(r"[=<>~!]", r)[0]: r for r in extras["gpu"]}
    for package in ("tensorrt-cu12", "tensorrt-cu12-libs", "tensorrt-cu12-bindings"):
        assert pins[package] == f"{package}=={SERVING_TENSORRT}"  # no wildcard: a .post release cannot slip in
    assert "tensorrt" not in pins and "pycuda" not in pins  # the meta-package, and a source-only package
    assert "<2" in pins["numpy"] and "<13" in pins["cuda-python"]
    tag = re.search(r"ARG TRITON_TAG=(\S+)", (ROOT / "deploy/docker/Dockerfile").read_text())
    assert tag is not None and NGC_TENSORRT[tag.group(1)] == SERVING_TENSORRT
    for path in ("Makefile", "scripts/gpu_check.sh", "deploy/docker/Dockerfile"):  # installs go through the extra
        text = (ROOT / path).read_text()
        assert "tensorrt==" not in text and "pycuda" not in text, path


def test_without_a_cuda_binding_the_runner_says_how_to_install_one() -> None:
    from ner_triton.gpu.cuda import load_backend

    with pytest.raises(EngineError, match=r"not one of \['cuda-python', 'pycuda'\]"):
        load_backend("cupy")
    for module in ("cuda", "pycuda"):
        try:
            __import__(module)
            pytest.skip(f"{module} is installed here: the missing-binding message cannot be shown")
        except ImportError:
            pass
    with pytest.raises(EngineError, match=r"no CUDA Python binding is installed.*pip install '\.\[gpu\]'"):
        load_backend()


@pytest.mark.slow
def test_tensorrt_form_quantizes_weighted_matmul_inputs_only(tiny_build) -> None:  # type: ignore[no-untyped-def]
    """Q/DQ on the inputs of every weighted MatMul but the classifier - the GELU-fed ones too, centred first -
    and on no MatMul output; symmetric int8; FP16 float parts; a valid sorted IR-9 graph; int64 in, FP32 out."""
    onnx_dir = tiny_build.artifacts / "onnx"
    trt = onnx.load(str(onnx_dir / "model_int8_trt.onnx"))
    fp32 = onnx.load(str(onnx_dir / "model_fp32.onnx"))
    counts = qdq_counts(trt)
    assert counts["QuantizeLinear_on_MatMul_output"] == 0 and counts["QuantizeLinear_on_other_activations"] > 0
    weighted = weight_matmuls(fp32)
    classifier = weighted[-1]
    bound = speed_bound(trt, 128)
    assert bound.int8_matmuls == len(weighted) - 1 == counts["int8_MatMul"]
    costs = {c.name: c for c in matmul_costs(trt, 128)}
    assert not costs[classifier].int8 and all(costs[n].int8 for n in weighted[:-1])
    gelu_fed = gelu_output_matmuls(fp32)
    assert gelu_fed and all(costs[n].int8 for n in gelu_fed)
    producer = {o: n for n in trt.graph.node for o in n.output}
    for name in gelu_fed:  # GELU -> Sub (centring) -> Q -> DQ -> MatMul
        (node,) = [n for n in trt.graph.node if n.name == name]
        q = producer[producer[node.input[0]].input[0]]
        assert q.op_type == "QuantizeLinear" and producer[q.input[0]].op_type == "Sub"
    inits = {i.name: numpy_helper.to_array(i) for i in trt.graph.initializer}
    for q in (n for n in trt.graph.node if n.op_type == "QuantizeLinear"):
        assert inits[q.input[2]].dtype == np.int8 and not inits[q.input[2]].any()  # symmetric: zero point 0
        assert inits[q.input[1]].dtype == np.float16
    assert trt.ir_version >= min_ir_version(trt) == 9
    onnx.checker.check_model(trt, full_check=True)
    assert {i.type.tensor_type.elem_type for i in trt.graph.input} == {TensorProto.INT64}
    assert [o.type.tensor_type.elem_type for o in trt.graph.output] == [TensorProto.FLOAT]
    # The CPU recipe is untouched: ONNX Runtime's default placement, outputs quantized too.
    assert qdq_counts(onnx.load(str(onnx_dir / "model_int8.onnx")))["QuantizeLinear_on_MatMul_output"] > 0
