"""The quality floor on a real (tiny) build: a model that learned nothing is refused before it is installed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ner_triton.errors import QualityGateError
from ner_triton.pipeline.build import build
from ner_triton.settings import BuildSettings, QuantSettings, TrainSettings

pytestmark = pytest.mark.slow


def test_a_build_that_learned_nothing_fails_the_floor_and_installs_nothing(
    tiny_model_dir: Path, conll_dir: Path, tmp_path: Path
) -> None:
    settings = BuildSettings(
        model=str(tiny_model_dir),
        data=str(conll_dir),
        artifacts=tmp_path / "artifacts",
        repository=tmp_path / "repo",
        train=TrainSettings(epochs=1, min_steps=0, batch_size=8, learning_rate=1e-9, warmup_ratio=0.0),
        quant=QuantSettings(calibration_sentences=16, calibration_length=32, max_f1_drop_points=100.0),
        threads=1,
    )
    with pytest.raises(QualityGateError, match=r"quality floor failed: FP32 test F1 .* dictionary baseline .*LR"):
        build(settings)
    report = json.loads((tmp_path / "artifacts" / "report.json").read_text())
    assert not report["quality"]["passed"] and report["baseline"]["f1"] > report["variants"]["onnx_fp32"]["f1"]
    assert "dictionary baseline" in (tmp_path / "artifacts" / "report.md").read_text()
    assert report["training"]["steps_run"] == 6 and report["training"]["stop_reason"].startswith("planned epochs")
    assert not (tmp_path / "repo" / "ner_bert_int8" / "1" / "model.onnx").exists()
