"""Small data on a real (tiny) training run: early stopping can fire when the step floor is the whole plan, and
an explicit EPOCHS is what runs; the build records the intervals the gate decided on."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ner_triton.pipeline.finetune import TRAIN_SUMMARY, finetune
from ner_triton.record import BuildReport
from support import TinyBuild, tiny_settings

pytestmark = pytest.mark.slow


def test_early_stopping_fires_inside_the_step_floor_and_says_why(
    tiny_model_dir: Path, conll_dir: Path, tmp_path: Path
) -> None:
    # 48 training sentences at batch 8: 6 steps an epoch; MIN_STEPS=60 plans 10 epochs (the floor is the plan).
    # A learning rate that changes nothing keeps validation F1 flat after epoch 1; patience (2) counts from
    # step 30 (half the plan), so the run ends after epoch 6 instead of running all 10.
    settings = tiny_settings(tiny_model_dir, conll_dir, tmp_path / "a", None, epochs=1, learning_rate=1e-9)
    settings = replace(settings, train=replace(settings.train, min_steps=60))
    summary = json.loads((finetune(settings, conll_dir, tmp_path / "model") / TRAIN_SUMMARY).read_text())
    assert summary["epochs_planned"] == 10 and summary["early_stop_from_step"] == 30
    assert summary["epochs_run"] == 6 and summary["steps_run"] == 36
    assert summary["stop_reason"].startswith("early stop: valid F1 did not improve for 2 epochs (best: epoch 1")
    assert "step floor MIN_STEPS=60" in summary["plan"]


def test_an_explicit_epochs_is_what_runs(tiny_model_dir: Path, conll_dir: Path, tmp_path: Path) -> None:
    settings = tiny_settings(tiny_model_dir, conll_dir, tmp_path / "a", None, epochs=1)
    settings = replace(settings, train=replace(settings.train, min_steps=1000, explicit=("epochs",)))
    summary = json.loads((finetune(settings, conll_dir, tmp_path / "model") / TRAIN_SUMMARY).read_text())
    assert summary["epochs_run"] == summary["epochs_planned"] == 1 and summary["steps_run"] == 6
    assert "EPOCHS=1 as set" in summary["plan"] and "does not apply" in summary["plan"]


def test_the_build_records_intervals_on_valid_and_test_pooled(tiny_build: TinyBuild) -> None:
    report = BuildReport.load(tiny_build.artifacts / "report.json")
    u = report.uncertainty
    assert u is not None and u.decided_on.startswith("valid+test pooled")
    assert u.heldout_sentences == u.test_sentences + report.training.valid_sentences
    assert set(u.test) == set(report.variants) and "torch_fp32" not in u.heldout
    for name, row in u.test.items():
        assert row.f1 == pytest.approx(report.variants[name].f1, abs=1e-4), "the counts sum to the reported F1"
        assert row.f1_low <= row.f1 <= row.f1_high and row.delta_low <= row.delta_points <= row.delta_high
    assert report.gate.rule.startswith("refused only when")
    assert "## Uncertainty" in (tiny_build.artifacts / "report.md").read_text()
    served = json.loads((tiny_build.repository / "ner" / "1" / "served.json").read_text())
    assert served["fallback"] is False and served["decided_on"] == u.decided_on
