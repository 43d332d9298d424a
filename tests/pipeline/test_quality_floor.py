"""The quality floor on a real (tiny) build: a model that learned nothing is refused before it is installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ner_triton.errors import QualityGateError
from ner_triton.pipeline.build import build
from ner_triton.record import BuildReport
from support import tiny_settings

pytestmark = pytest.mark.slow


def test_a_build_that_learned_nothing_fails_the_floor_and_installs_nothing(
    tiny_model_dir: Path, conll_dir: Path, tmp_path: Path
) -> None:
    settings = tiny_settings(
        tiny_model_dir, conll_dir, tmp_path / "artifacts", tmp_path / "repo", epochs=1, learning_rate=1e-9, floor=True
    )
    with pytest.raises(QualityGateError, match=r"quality floor failed: FP32 test F1 .* dictionary baseline .*LR"):
        build(settings)
    report = BuildReport.load(tmp_path / "artifacts" / "report.json")
    assert report.quality is not None and report.baseline is not None
    assert not report.quality.passed and report.baseline.f1 > report.f1("onnx_fp32")
    assert "dictionary baseline" in (tmp_path / "artifacts" / "report.md").read_text()
    assert report.training.steps_run == 6 and (report.training.stop_reason or "").startswith("planned epochs")
    assert not (tmp_path / "repo" / "ner_bert_int8" / "1" / "model.onnx").exists()
