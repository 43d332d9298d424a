"""Which CPU variant ``ner`` serves (pipeline.serve.choose), and that installs obey the build's record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ner_triton.errors import ConfigError, ModelLoadError, QualityGateError
from ner_triton.pipeline.serve import choose
from ner_triton.record import BuildReport, GateVerdict, Served, Training, VariantScore
from ner_triton.repository.install import served_record, served_settings
from ner_triton.settings import BuildSettings

SCORES = {
    "onnx_fp32": {"f1": 0.8823},
    "onnx_int8": {"f1": 0.8708},  # -1.15: static QDQ on an AVX2-only CPU
    "onnx_int8_dynamic": {"f1": 0.8813},  # -0.10
}


def test_the_fastest_variant_within_the_gate_is_served_not_the_fastest_overall() -> None:
    served = choose(SCORES, {"onnx_int8": 900.0, "onnx_int8_dynamic": 700.0}, max_drop_points=0.5)
    assert served["variant"] == "int8_dynamic" and served["passed"]
    assert served["candidates"]["int8"]["passed_gate"] is False
    assert served["candidates"]["int8"]["delta_f1_points"] == -1.15
    with_loose_gate = choose(SCORES, {"onnx_int8": 900.0, "onnx_int8_dynamic": 700.0}, max_drop_points=2.0)
    assert with_loose_gate["variant"] == "int8", "within the gate, speed decides"


def test_nothing_is_served_when_no_candidate_passes_and_the_failures_say_why() -> None:
    served = choose(SCORES, {}, max_drop_points=0.05)
    assert served["variant"] is None and not served["passed"]
    assert len(served["failures"]) == 2 and all("points below onnx_fp32" in f for f in served["failures"])


def test_serve_forces_a_variant_and_fp32_is_always_within_its_own_gate() -> None:
    assert choose(SCORES, {}, 0.5, forced="fp32")["variant"] == "fp32"
    forced = choose(SCORES, {"onnx_int8": 1.0}, 0.5, forced="int8")
    assert forced["variant"] is None and "onnx_int8 test F1" in forced["failures"][0]
    with pytest.raises(ConfigError, match="not a CPU variant"):
        choose(SCORES, {}, 0.5, forced="trt")
    with pytest.raises(ConfigError, match="SERVE='nope'"):
        BuildSettings.from_env({"SERVE": "nope"})


def _report(served: dict[str, Any], gate_passed: bool) -> dict[str, Any]:
    """A complete build report (the JSON form) around a served choice; figures are placeholders."""
    scores = {"precision": 0.9, "recall": 0.9, "support": 10, "sentences": 5, "per_type": {}, "size_mb": 1.0}
    latency = {"batch_1": {"batch_size": 1, "ms_per_batch_p50": 1.0, "ms_per_batch_p95": 1.0, "sentences_per_s": 9.0}}
    report = BuildReport(
        model="m",
        data="d",
        test_sentences=5,
        training=Training(10, 2, 1, 1, 3, "planned epochs", 1, 0.8, 1.0),
        variants={
            k: VariantScore.from_dict({**scores, **v, "latency": latency, "delta_f1_points": 0.0})
            for k, v in SCORES.items()
        },
        served=Served.from_dict(served),
        gate=GateVerdict(0.5, "onnx_fp32", served["variant"], gate_passed, tuple(served["failures"])),
        baseline=None,
        quality=None,
        settings={},
        versions={},
        cpus=2,
        threads=1,
        platform="test",
        build_seconds=1.0,
    )
    return report.as_dict()


def _artifacts(tmp_path: Path, report: dict[str, object] | None) -> Path:
    (tmp_path / "model").mkdir(parents=True)
    (tmp_path / "model" / "ner_model.json").write_text(json.dumps({"use_casing": True}))
    if report is not None:
        (tmp_path / "report.json").write_text(json.dumps(report))
    return tmp_path


def test_installs_refuse_a_build_without_a_report_or_with_a_failed_gate(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="only a finished build can be installed"):
        served_record(_artifacts(tmp_path / "a", None))
    failed = choose(SCORES, {}, max_drop_points=0.05)
    with pytest.raises(QualityGateError, match="failed its accuracy gate"):
        served_settings(_artifacts(tmp_path / "b", _report(failed, gate_passed=False)))


def test_a_report_from_an_earlier_release_is_refused_naming_make_build(tmp_path: Path) -> None:
    served = choose(SCORES, {"onnx_int8": 1.0, "onnx_int8_dynamic": 2.0}, 2.0)
    old = {k: v for k, v in _report(served, gate_passed=True).items() if k != "schema"}  # before the typed record
    for name, report in (("c", {"gate": {"passed": True}}), ("d", old)):
        with pytest.raises(ModelLoadError, match=r"earlier release.*run `make build`"):
            served_record(_artifacts(tmp_path / name, report))
    broken = {**_report(served, gate_passed=True), "served": {"variant": "int8"}}
    with pytest.raises(ModelLoadError, match=r"not a complete build report.*run `make build`"):
        BuildReport.load(_artifacts(tmp_path / "e", broken) / "report.json")


def test_the_record_round_trips_through_report_json(tmp_path: Path) -> None:
    served = choose(SCORES, {"onnx_int8": 1.0, "onnx_int8_dynamic": 2.0}, 2.0)
    report = BuildReport.from_dict(_report(served, gate_passed=True))
    again = BuildReport.load(report.write(tmp_path / "report.json"))
    assert again == report and again.served.variant == "int8_dynamic" and again.f1("onnx_int8") == 0.8708
    assert again.served.candidates["int8"].sentences_per_s == 1.0


def test_the_served_variant_comes_first_so_ner_serves_it(tmp_path: Path) -> None:
    served = choose(SCORES, {"onnx_int8": 1.0, "onnx_int8_dynamic": 2.0}, 2.0)
    settings = served_settings(_artifacts(tmp_path, _report(served, gate_passed=True)))
    assert settings.served.key == "int8_dynamic"
    assert [v.key for v in settings.variants] == ["int8_dynamic", "int8", "fp32"]
