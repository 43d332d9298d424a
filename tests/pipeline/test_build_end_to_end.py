"""The whole pipeline on a tiny random BERT and tiny CoNLL files: fine-tune -> export -> quantize -> evaluate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from ner_triton.errors import QualityGateError
from ner_triton.pipeline.gate import enforce_gate, gate
from ner_triton.record import BuildReport
from support import TinyBuild

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tiny_build: TinyBuild) -> Path:
    return tiny_build.artifacts


def test_report_has_every_variant(built: Path) -> None:
    report = BuildReport.load(built / "report.json")
    assert set(report.variants) == {"torch_fp32", "onnx_fp32", "onnx_int8", "onnx_int8_trt", "onnx_int8_dynamic"}
    for v in report.variants.values():
        assert 0.0 <= v.f1 <= 1.0
        assert set(v.per_type) <= {"LOC", "MISC", "ORG", "PER"}
        assert v.latency["batch_1"].sentences_per_s > 0
        assert v.size_mb > 0
    # ONNX FP32 is the same function as PyTorch: identical predictions on the test split.
    assert report.f1("onnx_fp32") == report.f1("torch_fp32")
    assert report.training.epochs_run >= 1
    assert report.gate.passed
    md = (built / "report.md").read_text()
    assert "| onnx_int8 |" in md and "Per entity type" in md


def test_onnx_graph_has_dynamic_axes_and_parity(built: Path) -> None:
    model = onnx.load(str(built / "onnx" / "model_fp32.onnx"))
    names = [i.name for i in model.graph.input]
    assert names == ["input_ids", "attention_mask", "casing_ids"]
    for i in model.graph.input:
        dims = [d.dim_param for d in i.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"]
    parity = json.loads((built / "onnx" / "parity.json").read_text())
    assert parity["max_abs_diff"] <= parity["tolerance"]


def test_static_int8_is_qdq_with_float_classifier_and_layernorm(built: Path) -> None:
    model = onnx.load(str(built / "onnx" / "model_int8.onnx"))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # LayerNorm, Softmax and GELU stay float: no QDQ pair feeds them.
    produced_by = {o: n for n in model.graph.node for o in n.output}
    for n in model.graph.node:
        if n.op_type in {"LayerNormalization", "Softmax", "Erf"}:
            assert all(produced_by.get(i) is None or produced_by[i].op_type != "DequantizeLinear" for i in n.input)
    classifier = [n for n in model.graph.node if n.name.endswith("classifier/MatMul")]
    assert classifier and all(
        i not in produced_by or produced_by[i].op_type != "DequantizeLinear" for i in classifier[0].input
    )
    assert (built / "onnx" / "model_int8.onnx").stat().st_size < 0.5 * (
        built / "onnx" / "model_fp32.onnx"
    ).stat().st_size


def test_tensorrt_int8_form_is_symmetric_with_centred_gelu_inputs(built: Path) -> None:
    """TensorRT accepts only int8 with zero point 0; the GELU-fed MatMuls are INT8 on a centred input
    (GELU -> Sub -> Q -> DQ -> MatMul), the embedding Gather stays float (FP16, like every float part, so the
    engine runs INT8 GEMMs and FP16 elsewhere)."""
    from onnx import numpy_helper

    from ner_triton.pipeline.quantize import gelu_output_matmuls

    fp32 = onnx.load(str(built / "onnx" / "model_fp32.onnx"))
    gelu_fed = gelu_output_matmuls(fp32)
    assert len(gelu_fed) == 2  # one FFN output projection per layer of the tiny model
    model = onnx.load(str(built / "onnx" / "model_int8_trt.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantizers = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert quantizers
    for node in quantizers:
        zero_point = inits[node.input[2]]
        assert zero_point.dtype.name == "int8" and not zero_point.any(), node.name
        assert inits[node.input[1]].dtype.name == "float16", "float parts (and Q/DQ scales) are FP16"
    produced_by = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type == "Gather":
            assert all(i not in produced_by or produced_by[i].op_type != "DequantizeLinear" for i in node.input)
        if node.name in gelu_fed:
            activation, weight = (produced_by[i] for i in node.input[:2])
            assert activation.op_type == weight.op_type == "DequantizeLinear", node.name
            assert produced_by[produced_by[activation.input[0]].input[0]].op_type == "Sub", node.name


def test_gate_names_the_variant_and_the_drop() -> None:
    variants = {"onnx_fp32": {"f1": 0.90}, "onnx_int8": {"f1": 0.885}, "onnx_int8_dynamic": {"f1": 0.899}}
    verdict = gate(variants, 1.0)
    assert not verdict["passed"]
    assert len(verdict["failures"]) == 1 and "onnx_int8 test F1 0.8850 is 1.50 points below" in verdict["failures"][0]
    assert gate(variants, 2.0)["passed"]


def test_failed_gate_raises_with_the_variant_and_the_fix(tmp_path: Path) -> None:
    verdict = gate({"onnx_fp32": {"f1": 0.9}, "onnx_int8": {"f1": 0.5}, "onnx_int8_dynamic": {"f1": 0.9}}, 1.0)
    with pytest.raises(QualityGateError, match=r"onnx_int8 test F1 0.5000 is 40.00 points below .*CALIB_SENTENCES"):
        enforce_gate(verdict, tmp_path / "report.md")
    enforce_gate(
        gate({"onnx_fp32": {"f1": 0.9}, "onnx_int8": {"f1": 0.9}, "onnx_int8_dynamic": {"f1": 0.9}}, 1.0),
        tmp_path / "report.md",
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODEL": "/no/such/model"}, "cannot load a tokenizer from MODEL='/no/such/model'"),
        ({"DATA": "/no/such/data"}, "DATA=/no/such/data is not a directory"),
        ({"EPOCHS": "x"}, "EPOCHS='x' is not valid"),
    ],
)
def test_cli_errors_are_one_line_not_tracebacks(
    env: dict[str, str], message: str, tmp_path: Path, conll_dir: Path
) -> None:
    # DATA points at the tests' own files unless the case is about DATA (a checkout may lack ../shared).
    full = {**os.environ, "ARTIFACTS": str(tmp_path), "HF_HUB_OFFLINE": "1", "DATA": str(conll_dir), **env}
    proc = subprocess.run([sys.executable, "build/build.py"], env=full, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_build_installs_the_model_repository(tiny_build: TinyBuild) -> None:
    repo = tiny_build.repository
    for name in ("ner", "ner_fp32", "ner_preprocess", "ner_postprocess", "ner_bert_int8", "ner_bert_fp32"):
        assert (repo / name / "config.pbtxt").is_file(), name
    assert (repo / "ner_bert_int8" / "1" / "model.onnx").read_bytes() == (
        built_onnx := tiny_build.artifacts / "onnx" / "model_int8.onnx"
    ).read_bytes(), built_onnx
    assert (repo / "ner_preprocess" / "1" / "tokenizer" / "tokenizer.json").is_file()
    assert json.loads((repo / "ner_postprocess" / "1" / "labels.json").read_text())


def test_smoothquant_keeps_the_float_function_and_quantizes(built: Path, tmp_path: Path, conll_dir: Path) -> None:
    import numpy as np

    from ner_triton.data import load_split
    from ner_triton.modeling import load_tokenizer
    from ner_triton.pipeline.quantize import (
        Calibration,
        PaddedCalibrationReader,
        quantize_variant,
        smooth_quant,
        static_plan,
        weight_matmuls,
    )
    from ner_triton.runtime.session import onnx_session
    from ner_triton.variants import INT8

    fp32 = built / "onnx" / "model_fp32.onnx"
    model = onnx.load(str(fp32))
    tokenizer = load_tokenizer(str(built / "model"))
    texts = [s.text for s in load_split(str(conll_dir), "train")[:16]]
    reader = PaddedCalibrationReader(tokenizer, texts, 32, [i.name for i in model.graph.input])
    plan, _ = static_plan(model, 9, ())
    matmuls = [n for n in plan if n in set(weight_matmuls(model))]
    smoothed = smooth_quant(fp32, reader, matmuls, 0.5, tmp_path / "smoothed.onnx")
    feed = reader.batches[0]
    a, b = onnx_session(fp32, 1).run(None, feed)[0], onnx_session(smoothed, 1).run(None, feed)[0]
    assert np.abs(a - b).max() < 1e-4, "smoothing must not change the float model's output"
    ops = [n.op_type for n in onnx.load(str(smoothed)).graph.node]
    assert ops.count("Mul") > [n.op_type for n in model.graph.node].count("Mul")
    calibration = load_split(str(conll_dir), "train")[:16]
    out = quantize_variant(INT8, fp32, tmp_path, Calibration(tokenizer, calibration, 9, 32, smooth_alpha=0.5))
    assert out.is_file() and not (tmp_path / f"smoothed_{out.name}").exists()


def test_repeated_builds_roll_versions_and_keep_the_committed_files(tiny_build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Each build with unchanged configs becomes the next version; the two newest stay. Version 1 keeps its
    committed model.py (only its weights go), and the repository stays servable."""
    import shutil

    from ner_triton.repository.rollout import export_repository, versions
    from ner_triton.serving.server import check_repository

    repo = tmp_path / "repo"
    shutil.copytree(tiny_build.repository, repo)
    (repo / "ner" / "1" / "model.onnx").unlink()  # a repository served before the one-step ner existed
    for _ in range(3):
        export_repository(tiny_build.artifacts, repo)
    step = repo / "ner_bert_int8"
    assert versions(step) == [3, 4]
    assert versions(repo / "ner") == [3, 4], "the one-step ner rolls with the BERT steps, even from no weights"
    assert (repo / "ner" / "4" / "served.json").is_file() and (repo / "ner" / "4" / "tokenizer").is_dir()
    assert (step / "1" / "model.py").is_file() and not (step / "1" / "model.onnx").exists()
    assert "ner_bert_int8" in check_repository(repo)
