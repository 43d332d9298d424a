"""The accuracy gate: an INT8 variant may not lose credibly more than ``max_f1_drop_points`` F1 against FP32.

The rule (docs/build.md): the gate decides on all the held-out data the build has - the validation and test
splits pooled - and on the 95% interval of each variant's difference from FP32 (a paired bootstrap over
sentences, :mod:`ner_triton.pipeline.bootstrap`), not on the point estimate. A variant is refused only when
even the upper end of its interval is a loss beyond the tolerance (``delta_high < -max_f1_drop_points``);
within the gate the speed race chooses (:mod:`ner_triton.pipeline.serve`). Without intervals (a report from
before them, or scores alone) the point estimate decides, as it used to.

One function decides (:func:`gate`); the build applies it to the CPU variants (``Variant.gated``) and
serves only one that passes - or FP32 when none does, unless ``REQUIRE_INT8=1`` - (a variant it does not
serve is reported without failing the build), and the GPU export applies it to the TensorRT form from the
build's report (:func:`check_report`) before any engine is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ner_triton.errors import QualityGateError
from ner_triton.record import BuildReport
from ner_triton.variants import REFERENCE, Variant, gated

HINT = "try more CALIB_SENTENCES, SMOOTHQUANT=0.5, or keep sensitive MatMuls in float (QuantSettings.keep_float)."
# Every knob that could bring an INT8 variant back (the FP32 fallback's message and REQUIRE_INT8's error).
KNOBS = (
    "more held-out sentences (larger valid/test splits narrow the interval), more calibration (CALIB_SENTENCES, "
    "default 512), SMOOTHQUANT=0.5, keeping the most sensitive MatMuls in float (QuantSettings.keep_float), "
    "a longer-trained model (MIN_STEPS, EPOCHS), a larger tolerance (MAX_F1_DROP), or forcing a form "
    "(SERVE=int8|int8_dynamic, still gated); SERVE=fp32 serves the reference on purpose, and REQUIRE_INT8=1 "
    "fails the build instead of serving FP32"
)
RULE = (
    "refused only when the upper end of the 95% interval of its F1 difference from FP32 (paired bootstrap over "
    "sentences) is a loss beyond the tolerance; within it the speed race decides"
)


def gate(
    scores: Mapping[str, Mapping[str, Any]],
    max_drop_points: float,
    variants: Sequence[Variant] | None = None,
    intervals: Mapping[str, Mapping[str, float]] | None = None,
    decided_on: str = "held-out data",
) -> dict[str, Any]:
    """The verdict on ``variants`` (default: the gated ones) from report-style ``scores`` (report key -> ``f1``).

    With ``intervals`` (report key -> ``delta_points``, ``delta_low``, ``delta_high`` on ``decided_on``, from
    :func:`~ner_triton.pipeline.bootstrap.paired_bootstrap`) a variant that has one is refused only when
    ``delta_high < -max_drop_points``; otherwise (no interval) its test point estimate decides."""
    ref = scores[REFERENCE.report_key]["f1"]
    failures = []
    for variant in (v for v in (gated() if variants is None else variants) if v.report_key in scores):
        row = (intervals or {}).get(variant.report_key)
        if row is not None:
            if row["delta_high"] < -max_drop_points:
                failures.append(
                    f"{variant.report_key} loses {-row['delta_points']:.2f} F1 points on {decided_on} (95% interval "
                    f"{row['delta_low']:+.2f} to {row['delta_high']:+.2f}): credibly more than the "
                    f"{max_drop_points} allowed"
                )
            continue
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
    """Raise :class:`QualityGateError` naming each INT8 variant that missed, and by how much (the FP32 fallback,
    ``verdict["fallback"]``, passed: it is logged by the build, not raised)."""
    if not verdict["passed"]:
        raise QualityGateError(
            "INT8 accuracy gate failed (no CPU variant that may be served is within it): "
            + "; ".join(verdict["failures"])
            + f". See {report_md}. To bring an INT8 variant back: {KNOBS}."
        )


def fallback_message(failures: Sequence[str], report_md: Path) -> str:
    """What the log says when the build serves FP32 because no INT8 form passed."""
    return (
        "no INT8 variant passed the accuracy gate (" + "; ".join(failures) + "): ner serves FP32, the reference "
        f"(exact, slower; the speed of each form is in {report_md}). To bring an INT8 variant back: {KNOBS}."
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
    u = report.uncertainty
    row = u.heldout.get(variant.report_key) if u is not None else None
    spread = ""
    if u is not None and row is not None:  # the build's rule: refused only when the loss is credibly beyond the gate
        drop = -row.delta_points
        spread = f", 95% interval {row.delta_low:+.2f} to {row.delta_high:+.2f} on {u.decided_on}"
        if row.delta_high >= -limit:
            return
    if drop > limit:
        raise QualityGateError(
            f"{variant.report_key} lost {drop:.2f} F1 points (gate {limit}{spread}) in "
            f"{report_path}: the GPU engine would serve a worse model. Rebuild with more CALIB_SENTENCES or epochs "
            "(docs/gpu.md), or rebuild with a larger MAX_F1_DROP if that loss is acceptable."
        )
