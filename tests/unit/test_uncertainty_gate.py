"""F1 with its uncertainty (pipeline.bootstrap), the gate that decides on the interval, the FP32 fallback, and the
training plan's explicit EPOCHS - without training anything."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ner_triton.errors import QualityGateError
from ner_triton.pipeline.bootstrap import paired_bootstrap, sentence_counts, uncertainty
from ner_triton.pipeline.evaluate import score_tags
from ner_triton.pipeline.finetune import early_stop_floor, plan_epochs
from ner_triton.pipeline.gate import KNOBS, check_report, enforce_gate, fallback_message, gate
from ner_triton.pipeline.report import render_markdown
from ner_triton.pipeline.serve import choose
from ner_triton.record import BuildReport, GateVerdict, Served, Training, Uncertainty, VariantScore
from ner_triton.repository.install import served_settings
from ner_triton.settings import BuildSettings
from ner_triton.variants import get

TYPES = ("PER", "geo-loc", "ORG")


def _random_tags(rng: random.Random, n: int) -> list[str]:
    tags = []
    for _ in range(n):
        r = rng.random()
        t = rng.choice(TYPES)
        tags.append("O" if r < 0.6 else f"B-{t}" if r < 0.85 else f"I-{t}")
    return tags


def _corrupt(rng: random.Random, tags: list[str], rate: float) -> list[str]:
    return [rng.choice(["O", "B-PER", "I-ORG"]) if rng.random() < rate else t for t in tags]


def _data(n: int, rate: float, seed: int = 0) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """Gold tags, a good prediction (5% of tags wrong) and a worse one (``rate`` more on top)."""
    rng = random.Random(seed)
    gold = [_random_tags(rng, rng.randint(3, 20)) for _ in range(n)]
    good = [_corrupt(rng, g, 0.05) for g in gold]
    worse = [_corrupt(rng, g, rate) for g in good]
    return gold, good, worse


def test_per_sentence_counts_sum_to_seqeval_f1() -> None:
    gold, good, worse = _data(300, 0.1)
    for pred in (good, worse):
        counts = sentence_counts(gold, pred)
        ours = paired_bootstrap({"ref": counts}, "ref", resamples=10)["ref"]["f1"]
        assert ours == pytest.approx(score_tags(gold, pred).f1, abs=1e-4)


def test_the_interval_is_seeded_paired_and_narrows_with_more_sentences() -> None:
    gold, good, worse = _data(2000, 0.03)
    counts = {"fp32": sentence_counts(gold, good), "int8": sentence_counts(gold, worse)}
    a, b = paired_bootstrap(counts, "fp32", seed=3), paired_bootstrap(counts, "fp32", seed=3)
    assert a == b, "seeded: the same figures every build"
    row = a["int8"]
    assert row["delta_low"] <= row["delta_points"] <= row["delta_high"] < 0, "a real loss: the interval is below 0"
    assert a["fp32"]["delta_low"] == a["fp32"]["delta_high"] == 0.0
    # paired: the difference's interval is narrower than either F1's own
    assert row["delta_high"] - row["delta_low"] < (row["f1_high"] - row["f1_low"]) * 100
    small = paired_bootstrap({k: v[:200] for k, v in counts.items()}, "fp32", seed=3)["int8"]
    assert small["delta_high"] - small["delta_low"] > 2 * (row["delta_high"] - row["delta_low"])


def test_the_gate_refuses_only_a_loss_credibly_beyond_the_tolerance() -> None:
    scores = {"onnx_fp32": {"f1": 0.55}, "onnx_int8": {"f1": 0.52}, "onnx_int8_dynamic": {"f1": 0.5279}}
    noisy = {  # small data: point estimates beyond 0.5 points, intervals that reach it
        "onnx_int8": {"delta_points": -3.0, "delta_low": -5.9, "delta_high": -0.2},
        "onnx_int8_dynamic": {"delta_points": -2.21, "delta_low": -4.6, "delta_high": 0.1},
    }
    assert not gate(scores, 0.5)["passed"], "on point estimates both fail"
    assert gate(scores, 0.5, intervals=noisy, decided_on="valid+test")["passed"]
    credible = {**noisy, "onnx_int8": {"delta_points": -3.0, "delta_low": -4.1, "delta_high": -1.9}}
    verdict = gate(scores, 0.5, intervals=credible, decided_on="valid+test pooled (719 sentences)")
    assert verdict["failures"] == [
        "onnx_int8 loses 3.00 F1 points on valid+test pooled (719 sentences) (95% interval -4.10 to -1.90): "
        "credibly more than the 0.5 allowed"
    ]


def test_within_the_gate_speed_decides_and_with_none_fp32_is_served() -> None:
    scores = {"onnx_fp32": {"f1": 0.55}, "onnx_int8": {"f1": 0.52}, "onnx_int8_dynamic": {"f1": 0.5279}}
    speeds = {"onnx_int8": 90.0, "onnx_int8_dynamic": 100.0}
    wide = {
        "onnx_int8": {"delta_points": -3.0, "delta_low": -5.9, "delta_high": -0.2},
        "onnx_int8_dynamic": {"delta_points": -2.21, "delta_low": -4.6, "delta_high": 0.1},
    }
    served = choose(scores, speeds, 0.5, intervals=wide, decided_on="valid+test", fallback=True)
    assert served["variant"] == "int8_dynamic" and not served["fallback"]
    assert served["candidates"]["int8"]["delta_high"] == -0.2
    bad = {k: {**v, "delta_high": -1.0} for k, v in wide.items()}
    fallback = choose(scores, speeds, 0.5, intervals=bad, decided_on="valid+test", fallback=True)
    assert fallback["variant"] == "fp32" and fallback["report_key"] == "onnx_fp32"
    assert fallback["passed"] and fallback["fallback"] and "REQUIRE_INT8=1" in fallback["reason"]
    assert len(fallback["failures"]) == 2, "the INT8 failures stay on the record"
    required = choose(scores, speeds, 0.5, intervals=bad, decided_on="valid+test", fallback=False)
    assert required["variant"] is None and not required["passed"]
    forced = choose(scores, speeds, 0.5, forced="int8", intervals=bad, fallback=True)
    assert forced["variant"] is None, "a SERVE the user set is not silently replaced by FP32"


def test_the_fallback_and_require_int8_messages_name_every_knob(tmp_path: Path) -> None:
    for knob in ("CALIB_SENTENCES", "SMOOTHQUANT", "keep_float", "MAX_F1_DROP", "SERVE=fp32", "REQUIRE_INT8=1",
                 "MIN_STEPS", "held-out sentences"):  # fmt: skip
        assert knob in KNOBS
    assert "ner serves FP32" in fallback_message(["onnx_int8 loses 3.00"], tmp_path / "report.md")
    with pytest.raises(QualityGateError, match=r"INT8 accuracy gate failed.*REQUIRE_INT8=1 fails the build"):
        enforce_gate({"passed": False, "failures": ["onnx_int8 loses 3.00"]}, tmp_path / "report.md")
    assert BuildSettings.from_env({"REQUIRE_INT8": "1"}).quant.require_int8
    assert not BuildSettings.from_env({}).quant.require_int8


def _report(served: dict[str, Any], heldout: dict[str, dict[str, float]]) -> BuildReport:
    scores = {"precision": 0.5, "recall": 0.5, "support": 214, "sentences": 360, "per_type": {}, "size_mb": 1.0}
    latency = {"batch_1": {"batch_size": 1, "ms_per_batch_p50": 1.0, "ms_per_batch_p95": 1.0, "sentences_per_s": 9.0},
               "batch_32": {"batch_size": 32, "ms_per_batch_p50": 9.0, "ms_per_batch_p95": 9.0,
                            "sentences_per_s": 99.0}}  # fmt: skip
    f1 = {"onnx_fp32": 0.55, "onnx_int8": 0.52, "onnx_int8_dynamic": 0.5279, "onnx_int8_trt": 0.5628}
    interval = {"f1": 0.5, "f1_low": 0.45, "f1_high": 0.55, "delta_points": 0.0, "delta_low": 0.0, "delta_high": 0.0}
    gate_passed = served["passed"]
    return BuildReport.from_dict(
        {
            **BuildReport(
                model="m",
                data="d",
                test_sentences=360,
                training=Training(1675, 359, 19, 19, 1007, "planned epochs", 19, 0.55, 1.0),
                variants={
                    k: VariantScore.from_dict({**scores, "f1": v, "latency": latency, "delta_f1_points": 0.0})
                    for k, v in f1.items()
                },
                served=Served.from_dict(served),
                gate=GateVerdict(0.5, "onnx_fp32", served["variant"], gate_passed, (), (), served["fallback"], "r"),
                baseline=None,
                quality=None,
                settings={},
                versions={},
                cpus=2,
                threads=1,
                platform="test",
                build_seconds=1.0,
            ).as_dict(),
            "uncertainty": {
                "method": "m",
                "resamples": 10,
                "seed": 13,
                "confidence": 0.95,
                "tolerance_points": 0.5,
                "decided_on": "valid+test pooled (719 sentences)",
                "test_sentences": 360,
                "heldout_sentences": 719,
                "test_entities": 214,
                "heldout_entities": 453,
                "seconds": 0.1,
                "test": {k: interval for k in f1},
                "heldout": {k: {**interval, **v} for k, v in heldout.items()},
            },
        }
    )


def test_the_fp32_fallback_is_installed_and_served_json_says_so(tmp_path: Path) -> None:
    scores = {"onnx_fp32": {"f1": 0.55}, "onnx_int8": {"f1": 0.52}, "onnx_int8_dynamic": {"f1": 0.5279}}
    bad = {k: {"delta_points": -3.0, "delta_low": -4.0, "delta_high": -2.0} for k in ("onnx_int8", "onnx_int8_dynamic")}
    served = choose(scores, {}, 0.5, intervals=bad, decided_on="valid+test pooled", fallback=True)
    report = _report(served, bad)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "ner_model.json").write_text(json.dumps({"use_casing": True}))
    again = BuildReport.load(report.write(tmp_path / "report.json"))
    assert again == report and again.served.fallback and again.gate.fallback
    assert again.uncertainty is not None and again.uncertainty.heldout["onnx_int8"].delta_high == -2.0
    settings = served_settings(tmp_path)
    assert settings.served.key == "fp32", "ner serves FP32"
    assert again.served.as_dict()["fallback"] is True, "served.json (Served.as_dict) says it is the fallback"
    md = render_markdown(again)
    assert "FP32 fallback" in md and "-4.00 to -2.00" in md and "too small to tell" not in md


def test_the_gpu_check_uses_the_interval_when_the_report_has_one(tmp_path: Path) -> None:
    scores = {"onnx_fp32": {"f1": 0.55}, "onnx_int8": {"f1": 0.52}, "onnx_int8_dynamic": {"f1": 0.5279}}
    served = choose(scores, {}, 100.0)
    trt = get("trt")
    wide = {"onnx_int8_trt": {"delta_points": -0.9, "delta_low": -2.0, "delta_high": 0.3}}
    check_report(_report(served, wide).write(tmp_path / "a.json"), trt)  # a noisy loss: not refused
    credible = {"onnx_int8_trt": {"delta_points": -0.9, "delta_low": -1.2, "delta_high": -0.6}}
    with pytest.raises(QualityGateError, match=r"onnx_int8_trt lost 0\.90 F1 points"):
        check_report(_report(served, credible).write(tmp_path / "b.json"), trt)


def test_uncertainty_record_and_small_split_warning_in_the_report() -> None:
    gold, good, worse = _data(120, 0.05)
    test = {"onnx_fp32": sentence_counts(gold, good), "onnx_int8": sentence_counts(gold, worse)}
    record = uncertainty(test, test, "onnx_fp32", 0.5, "the test split", seed=13, resamples=200)
    typed = Uncertainty.from_dict(record)
    assert typed.test_entities == int(test["onnx_fp32"][:, [0, 2]].sum()) and typed.seconds >= 0
    assert typed.test["onnx_int8"].half_width > 0.5, "120 short sentences cannot tell half a point from noise"


def test_an_explicit_epochs_wins_over_the_step_floor_and_says_so() -> None:
    default = BuildSettings.from_env({}).train
    assert plan_epochs(200, default)[0] == 40, "the defaults: the step floor plans (capped at MAX_EPOCHS)"
    one = BuildSettings.from_env({"EPOCHS": "1"}).train
    epochs, why = plan_epochs(200, one)
    assert epochs == 1 and "EPOCHS=1 as set" in why and "does not apply" in why
    both = BuildSettings.from_env({"EPOCHS": "1", "MIN_STEPS": "1000"}).train
    epochs, why = plan_epochs(200, both)
    assert epochs == 40 and "MIN_STEPS was set too" in why
    assert plan_epochs(14041, default) == (4, "EPOCHS=4 (1756 steps, at least MIN_STEPS=1000)")


def test_early_stopping_counts_from_half_the_plan_when_the_floor_is_the_whole_plan() -> None:
    assert early_stop_floor(1000, 19 * 53) == 503, "a small set: the floor is the plan, patience counts from half"
    assert early_stop_floor(1000, 4 * 439) == 878, "CoNLL-2003: epoch 2's end, as before (no stop before epoch 3)"
    assert early_stop_floor(0, 100) == 0


def test_the_bootstrap_is_cheap(caplog: pytest.LogCaptureFixture) -> None:
    """Sized like CoNLL-2003 test (3,453 sentences) and five variants: it must not be a reason to skip it."""
    caplog.set_level(logging.INFO)
    rng = np.random.default_rng(0)
    counts = {f"v{i}": rng.integers(0, 4, size=(3453, 3)) for i in range(5)}
    record = uncertainty(counts, counts, "v0", 0.5, "x", seed=1)
    assert record["resamples"] == 1000 and set(record["test"]) == set(counts)
