"""The GPU path's parts that need neither a GPU nor TensorRT: the tensorrt layout of the model
repository, bucket padding, optimization profiles, engine manifests and the FP16 graph."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ner_triton.errors import ConfigError, EngineError
from ner_triton.gpu.engine import check_writable, export_gpu_repository
from ner_triton.gpu.manifest import MANIFEST_FILE, EngineManifest, check_compatible
from ner_triton.pipeline.gate import check_report
from ner_triton.record import BuildReport, Interval
from ner_triton.repository.model_configs import (
    RepositorySettings,
    all_configs,
    parse_pbtxt,
    to_pbtxt,
)
from ner_triton.repository.model_configs import mc as model_config
from ner_triton.repository.render import expected_files
from ner_triton.runtime.steps import Limits, Preprocessor
from ner_triton.schema import ENSEMBLE, INPUT_IDS, PREPROCESS
from ner_triton.settings import EngineSettings
from ner_triton.variants import TRT, Layout


def gpu_models() -> dict[str, model_config.ModelConfig]:
    return {c.name: parse_pbtxt(to_pbtxt(c)) for c in all_configs(RepositorySettings(), Layout.TENSORRT)}


def test_gpu_layout_serves_the_engine_under_the_default_ensemble_name() -> None:
    models = gpu_models()
    assert set(models) == {PREPROCESS, "ner_postprocess", "ner_bert_trt", "ner_route_trt", ENSEMBLE}
    steps = [s.model_name for s in models[ENSEMBLE].ensemble_scheduling.step]
    assert steps == [PREPROCESS, "ner_route_trt", "ner_postprocess"], "the bucket router calls the engine"
    router = models["ner_route_trt"]
    assert router.parameters["target"].string_value == "ner_bert_trt"
    assert router.max_batch_size == int(router.parameters["max_rows"].string_value) == EngineSettings().max_batch_size


def test_trt_step_is_a_batched_gpu_plan_with_one_profile_per_bucket() -> None:
    engine = EngineSettings()
    trt = gpu_models()["ner_bert_trt"]
    assert trt.platform == "tensorrt_plan" and trt.default_model_filename == "model.plan"
    assert trt.max_batch_size == engine.max_batch_size
    (group,) = trt.instance_group
    assert group.kind == model_config.ModelInstanceGroup.KIND_GPU
    assert list(group.profile) == [str(i) for i in range(len(engine.buckets))]
    assert not any(t.allow_ragged_batch for t in trt.input)  # TensorRT needs equal shapes in a batch
    assert trt.dynamic_batching.default_queue_policy.max_queue_size > 0
    assert [list(w.inputs[INPUT_IDS].dims) for w in trt.model_warmup] == [[b] for b in engine.buckets]


def test_gpu_tokenizer_pads_to_the_engine_buckets() -> None:
    params = {k: v.string_value for k, v in gpu_models()[PREPROCESS].parameters.items()}
    assert Limits.from_parameters(params).buckets == EngineSettings().buckets
    cpu = {c.name: c for c in all_configs(RepositorySettings())}[PREPROCESS]
    assert "buckets" not in cpu.parameters  # the CPU layout pads to the longest window only


def test_limits_buckets_round_trip_and_validate() -> None:
    limits = Limits(buckets=(16, 32, 64, 128))
    assert Limits.from_parameters(limits.to_parameters()) == limits
    assert [limits.padded_length(n) for n in (1, 16, 17, 100, 128)] == [16, 16, 32, 128, 128]
    assert Limits().padded_length(7) == 7
    with pytest.raises(ValueError, match="ascend and end at >= max_length"):
        Limits(buckets=(16, 64))
    with pytest.raises(ValueError, match="ascend"):
        Limits(buckets=(32, 16, 128))


def test_preprocessor_pads_each_request_to_its_bucket(tiny_model_dir: Path) -> None:
    step = Preprocessor(tiny_model_dir, Limits(buckets=(16, 32, 64, 128)))
    short = step(np.array([b"Maria Lindqvist flew to Oslo."], dtype=object))
    assert short[INPUT_IDS].shape == (1, 16)
    long = step(np.array([" ".join(["word"] * 20).encode(), b"Hi"], dtype=object))
    assert long[INPUT_IDS].shape == (2, 32)


def test_small_engines_take_their_max_batch_as_opt() -> None:
    assert [p["opt"] for p in EngineSettings(buckets=(16, 32), max_batch_size=8).profiles()] == [[8, 16], [8, 32]]


def test_gpu_layout_refuses_requests_the_engine_cannot_batch() -> None:
    s = replace(RepositorySettings(), engine=EngineSettings(max_batch_size=32))
    with pytest.raises(ConfigError, match="at most 32: build the engine with max_batch_size >= 64"):
        all_configs(s, Layout.TENSORRT)


def test_layout_commands_write_their_own_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ner_triton.repository.rollout import main

    monkeypatch.chdir(tmp_path)
    assert main(["--backend", "tensorrt"]) == 0 and main(["--backend", "onnxruntime"]) == 0
    assert (tmp_path / "model_repository_gpu" / "ner_bert_trt" / "config.pbtxt").is_file()
    assert (tmp_path / "model_repository_ngc" / "ner_bert_int8" / "config.pbtxt").is_file()
    assert not (tmp_path / "model_repository").exists()


def test_engine_profiles_cover_every_length_once() -> None:
    e = EngineSettings(buckets=(16, 32, 64, 128), max_batch_size=128, opt_batch_size=32)
    profiles = e.profiles()
    assert [p["min"][1] for p in profiles] == [1, 17, 33, 65]
    assert [p["max"] for p in profiles] == [[128, 16], [128, 32], [128, 64], [128, 128]]
    assert all(p["opt"][0] == 32 for p in profiles)
    assert [e.bucket_for(n) for n in (1, 16, 17, 128)] == [0, 0, 1, 3]
    with pytest.raises(ConfigError, match="exceeds the largest bucket 128"):
        e.bucket_for(129)
    with pytest.raises(ConfigError, match="distinct ascending"):
        EngineSettings(buckets=(32, 16))


def manifest(**kw: object) -> EngineManifest:
    base = dict(
        precision="int8",
        tensorrt_version="10.5.0",
        gpu_name="NVIDIA H200",
        compute_capability="9.0",
        onnx_file="model_int8_trt.onnx",
        onnx_sha256="0" * 64,
        max_batch_size=128,
        buckets=(16, 32, 64, 128),
        profiles=EngineSettings().profiles(),
        inputs=["input_ids", "attention_mask", "casing_ids"],
    )
    base.update(kw)
    return EngineManifest(**base)  # type: ignore[arg-type]


def test_manifest_round_trips(tmp_path: Path) -> None:
    m = manifest()
    assert EngineManifest.read(m.write(tmp_path / MANIFEST_FILE)) == m


def test_engine_from_another_tensorrt_or_gpu_generation_is_refused_with_the_fix() -> None:
    with pytest.raises(EngineError, match=r"TensorRT 10\.5\.0 built it, this is TensorRT 10\.7\.0.*rebuild it"):
        check_compatible(manifest(), "10.7.0", "NVIDIA H200", "9.0")
    with pytest.raises(EngineError, match=r"compute capability 9\.0 \(NVIDIA H200\), this GPU is 8\.0 \(NVIDIA A100"):
        check_compatible(manifest(), "10.5.0", "NVIDIA A100-SXM4-80GB", "8.0")


def test_same_generation_other_gpu_runs_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        check_compatible(manifest(), "10.5.0", "NVIDIA H100 80GB HBM3", "9.0")
    assert "built on NVIDIA H200" in caplog.text


def test_missing_or_broken_manifest_says_how_to_rebuild(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match=r"missing.*ner-engine"):
        EngineManifest.read(tmp_path / MANIFEST_FILE)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps({"precision": "int8"}))
    with pytest.raises(EngineError, match="not an engine manifest"):
        EngineManifest.read(tmp_path / MANIFEST_FILE)


def test_without_tensorrt_the_builder_says_how_to_install_it(tmp_path: Path) -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here: the missing-TensorRT message cannot be shown")
    except ImportError:
        pass
    from ner_triton.gpu.engine import build_engine

    with pytest.raises(EngineError, match=r"TensorRT is not installed.*pip install '\.\[gpu\]'"):
        build_engine(tmp_path / "model.onnx", tmp_path / "out", "int8")


@pytest.mark.slow
def test_fp16_graph_matches_fp32(tiny_build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import onnx
    import onnxruntime as ort

    from ner_triton.pipeline.fp16 import convert_to_fp16

    fp32 = tiny_build.artifacts / "onnx" / "model_fp32.onnx"
    half = convert_to_fp16(fp32, tmp_path / "model_fp16.onnx")
    model = onnx.load(str(half))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert [i.type.tensor_type.elem_type for i in model.graph.output] == [onnx.TensorProto.FLOAT]
    assert model.ir_version == 9  # opset 19 came with IR 9
    onnx.checker.check_model(model, full_check=True)  # sorted nodes, IR matching its opset
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(1000, 5000, (3, 12)), "attention_mask": np.ones((3, 12), np.int64)}
    feed["casing_ids"] = np.zeros((3, 12), np.int64)
    a = ort.InferenceSession(str(fp32)).run(None, feed)[0]
    b = ort.InferenceSession(str(half)).run(None, feed)[0]
    assert np.abs(a - b).max() < 2e-2 and (a.argmax(-1) == b.argmax(-1)).mean() > 0.95


@pytest.mark.slow
def test_gpu_repository_is_replaced_only_by_a_finished_engine(tiny_build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The engine is built into a staging directory: a failed build leaves the served engine alone."""

    def build_ok(onnx: Path, out: Path, precision: str, settings: EngineSettings) -> None:
        out.mkdir(parents=True)
        (out / "model.plan").write_bytes(onnx.read_bytes()[:64])  # stands in for TensorRT's output

    def build_fails(onnx: Path, out: Path, precision: str, settings: EngineSettings) -> None:
        out.mkdir(parents=True)
        (out / "model.plan").write_bytes(b"partial")
        raise EngineError("TensorRT failed to build an engine")

    repo = tmp_path / "gpu"
    export_gpu_repository(tiny_build.artifacts, repo, EngineSettings(), build_ok)
    plan = repo / TRT.triton_name / "1" / "model.plan"
    served = plan.read_bytes()
    expected = expected_files(replace(RepositorySettings(), engine=EngineSettings()), Layout.TENSORRT)
    assert all((repo / rel).is_file() for rel in expected if not rel.endswith(".gitkeep"))
    assert (repo / PREPROCESS / "1" / "tokenizer" / "tokenizer.json").is_file()
    with pytest.raises(EngineError):
        export_gpu_repository(tiny_build.artifacts, repo, EngineSettings(), build_fails)
    assert plan.read_bytes() == served


@pytest.mark.slow
def test_engine_graph_clamps_every_id_to_its_table(tiny_build) -> None:  # type: ignore[no-untyped-def]
    """TensorRT does not bounds-check Gather: the engine's graph clamps ids; valid ids give the same logits."""
    import onnx
    import onnxruntime as ort

    from ner_triton.gpu.engine import clamp_id_inputs

    path = tiny_build.artifacts / "onnx" / "model_int8_trt.onnx"
    clamped = ort.InferenceSession(clamp_id_inputs(onnx.load(str(path))).SerializeToString())
    plain = ort.InferenceSession(str(path))
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(1000, 5000, (2, 9)), "attention_mask": np.ones((2, 9), np.int64)}
    feed["casing_ids"] = np.ones((2, 9), np.int64)
    assert np.array_equal(clamped.run(None, feed)[0], plain.run(None, feed)[0])
    bad = {k: v.copy() for k, v in feed.items()}
    bad["input_ids"][0, 3], bad["casing_ids"][1, 1], bad["attention_mask"][0, 0] = 10**12, -5, 7
    with pytest.raises(Exception, match=r"out of bounds|indices"):
        plain.run(None, bad)
    assert np.isfinite(clamped.run(None, bad)[0]).all()


@pytest.mark.slow
def test_gpu_export_is_refused_when_the_tensorrt_form_failed_the_gate(tiny_build, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from ner_triton.errors import QualityGateError

    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny_build.artifacts, artifacts)
    report = BuildReport.load(artifacts / "report.json")
    trt = replace(report.variants["onnx_int8_trt"], delta_f1_points=-1.5, f1=report.f1("onnx_fp32") - 0.015)
    assert report.uncertainty is not None, "the build records the intervals the gate decides on"
    ref = report.f1("onnx_fp32")

    def with_interval(low: float, high: float) -> BuildReport:
        """The report as if the TensorRT form lost 1.5 points on the held-out data, interval ``low``..``high``."""
        row = Interval(ref - 0.015, ref - 0.02, ref - 0.01, -1.5, low, high)
        u = replace(report.uncertainty, heldout={**report.uncertainty.heldout, "onnx_int8_trt": row})
        return replace(report, gate=replace(report.gate, max_f1_drop_points=1.0),
                       variants={**report.variants, "onnx_int8_trt": trt}, uncertainty=u)  # fmt: skip

    # a loss whose interval reaches inside the tolerance is noise on this many sentences: not refused
    with_interval(-2.4, -0.6).write(artifacts / "report.json")
    check_report(artifacts / "report.json", TRT)
    # a loss credibly beyond the tolerance (even the upper end of its interval): refused, nothing built
    with_interval(-2.0, -1.1).write(artifacts / "report.json")

    def never(*_: object) -> None:
        raise AssertionError("no engine is built for a model that failed its gate")

    with pytest.raises(QualityGateError, match=r"onnx_int8_trt lost 1\.50 F1 points \(gate 1\.0, 95% interval -2\.00"):
        export_gpu_repository(artifacts, tmp_path / "gpu", EngineSettings(), never)
    assert not (tmp_path / "gpu").exists()


def test_engine_refuses_an_unwritable_repository_before_building(tmp_path: Path) -> None:
    """Finding 3 of issue 21: the error names the fix (create the bind mount first, run as its owner)."""
    check_writable(tmp_path / "model_repository_gpu")  # created when missing
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match=r"mkdir -p model_repository_gpu && docker run --user"):
        check_writable(blocker / "model_repository_gpu")
