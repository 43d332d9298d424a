"""Which CPU variant ``ner`` serves (pipeline.serve.choose), and that installs obey the build's record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ner_triton.errors import ConfigError, ModelLoadError, QualityGateError
from ner_triton.pipeline.serve import choose
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
    report = {"served": failed, "gate": {"passed": False, "failures": failed["failures"]}}
    with pytest.raises(QualityGateError, match="failed its accuracy gate"):
        served_settings(_artifacts(tmp_path / "b", report))
    with pytest.raises(ModelLoadError, match="older release"):
        served_record(_artifacts(tmp_path / "c", {"gate": {"passed": True}}))


def test_the_served_variant_comes_first_so_ner_serves_it(tmp_path: Path) -> None:
    served = choose(SCORES, {"onnx_int8": 1.0, "onnx_int8_dynamic": 2.0}, 2.0)
    settings = served_settings(_artifacts(tmp_path, {"served": served, "gate": {"passed": True}}))
    assert settings.served.key == "int8_dynamic"
    assert [v.key for v in settings.variants] == ["int8_dynamic", "int8", "fp32"]
