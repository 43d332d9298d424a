"""The accuracy gate: an INT8 variant may lose at most ``max_f1_drop_points`` test F1 against FP32.

One function decides (:func:`gate`); the build applies it to the CPU variants (``Variant.gated``) and
serves only one that passes (:mod:`ner_triton.pipeline.serve`; a variant it does not serve is reported
without failing the build), and the GPU export applies it to the TensorRT form from the build's report
(:func:`check_report`) before any engine is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ner_triton.errors import QualityGateError
from ner_triton.record import BuildReport
from ner_triton.variants import REFERENCE, Variant, gated

HINT = "try more CALIB_SENTENCES, SMOOTHQUANT=0.5, or keep sensitive MatMuls in float (QuantSettings.keep_float)."


def gate(
    scores: Mapping[str, Mapping[str, Any]], max_drop_points: float, variants: Sequence[Variant] | None = None
) -> dict[str, Any]:
    """The verdict on ``variants`` (default: the gated ones) from report-style ``scores`` (report key -> ``f1``)."""
    ref = scores[REFERENCE.report_key]["f1"]
    failures = []
    for variant in (v for v in (gated() if variants is None else variants) if v.report_key in scores):
        f1 = scores[variant.report_key]["f1"]
        drop = (ref - f1) * 100
        if drop > max_drop_points:
            failures.append(
                f"{variant.report_key} test F1 {f1:.4f} is {drop:.2f} points below {REFERENCE.report_key} "
                f"{ref:.4f} (allowed: {max_drop_points})"
            )
    return {
        "max_f1_drop_points": max_drop_points,
        "reference": REFERENCE.report_key,
        "passed": not failures,
        "failures": failures,
    }


def enforce_gate(verdict: Mapping[str, Any], report_md: Path) -> None:
    """Raise :class:`QualityGateError` naming each INT8 variant that missed, and by how much."""
    if not verdict["passed"]:
        raise QualityGateError(
            "INT8 accuracy gate failed (no CPU variant that may be served is within it): "
            + "; ".join(verdict["failures"])
            + f". See {report_md}; {HINT}"
        )


def check_report(report_path: Path, variant: Variant) -> None:
    """Apply the build's gate (its limit, from the build's :class:`~ner_triton.record.BuildReport`) to
    ``variant``'s scores in it.

    Raises :class:`QualityGateError` when it lost more; a missing report is not checked (nothing to read), a
    report from an earlier release raises ModelLoadError (run ``make build``).
    """
    if not report_path.is_file():
        return
    report = BuildReport.load(report_path)
    limit = report.gate.max_f1_drop_points
    if variant.report_key not in report.variants or REFERENCE.report_key not in report.variants:
        return
    drop = (report.f1(REFERENCE.report_key) - report.f1(variant.report_key)) * 100
    if drop > limit:
        raise QualityGateError(
            f"{variant.report_key} lost {drop:.2f} F1 points (gate {limit}) in "
            f"{report_path}: the GPU engine would serve a worse model. Rebuild with more CALIB_SENTENCES or epochs "
            "(docs/gpu.md), or rebuild with a larger MAX_F1_DROP if that loss is acceptable."
        )
