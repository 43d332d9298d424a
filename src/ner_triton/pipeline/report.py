"""The build report: ``report.json`` (the :class:`~ner_triton.record.BuildReport`) and ``report.md`` (for people)."""

from __future__ import annotations

from pathlib import Path

from ner_triton.record import BuildReport, GateVerdict, Served
from ner_triton.schema import REPORT_JSON, REPORT_MD
from ner_triton.variants import REFERENCE


def write_report(report: BuildReport, output_dir: Path) -> Path:
    """Write ``report.json`` and ``report.md`` into ``output_dir``; returns the JSON path."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = report.write(output_dir / REPORT_JSON)
    (output_dir / REPORT_MD).write_text(render_markdown(report), encoding="utf-8")
    return path


def served_lines(served: Served, gate: GateVerdict) -> list[str]:
    """The served-variant choice: every candidate's F1, gate verdict and race speed, and the winner."""
    lines = [
        f"Served by `ner`: **{served.variant or 'nothing'}** ({served.reason}).",
        "",
        "| candidate | F1 | delta | within gate | sent/s (race) |",
        "|---|---|---|---|---|",
    ]
    for key, c in served.candidates.items():
        speed = "-" if c.sentences_per_s is None else f"{c.sentences_per_s:.0f}"
        lines.append(f"| {key} | {c.f1:.4f} | {c.delta_f1_points:+.2f} | "
                     f"{'yes' if c.passed_gate else 'no'} | {speed} |")  # fmt: skip
    if gate.not_served:
        lines += ["", "Not served (reported, not gated): " + "; ".join(gate.not_served)]
    return [*lines, ""]


def render_markdown(report: BuildReport) -> str:
    tr = report.training
    lines = [
        "# Build report",
        "",
        f"- model: `{report.model}`",
        f"- data: `{report.data}` ({tr.train_sentences} train / {tr.valid_sentences} valid / "
        f"{report.test_sentences} test sentences)",
        f"- epochs run: {tr.epochs_run} of {tr.epochs_planned} planned, "
        f"{'?' if tr.steps_run is None else tr.steps_run} optimizer steps ({tr.stop_reason or 'n/a'}; best epoch "
        f"{tr.best_epoch}, valid F1 {tr.best_valid_f1:.4f}), training time {tr.train_seconds:.0f} s, "
        f"build time {report.build_seconds:.0f} s",
        f"- machine: {report.cpus} CPUs, {report.threads} threads, "
        f"torch {report.versions.get('torch', '?')}, onnxruntime {report.versions.get('onnxruntime', '?')}",
        "",
        "## Variants (test split, entity level, seqeval default mode)",
        "",
        "| variant | F1 | precision | recall | ΔF1 vs onnx_fp32 (points) | size MB "
        "| batch-1 ms (p50) | batch-32 ms (p50) | batch-32 sent/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, v in report.variants.items():
        b1, b32 = v.latency["batch_1"], v.latency["batch_32"]
        lines.append(
            f"| {name} | {v.f1:.4f} | {v.precision:.4f} | {v.recall:.4f} | {v.delta_f1_points:+.2f} | "
            f"{v.size_mb:.1f} | {b1.ms_per_batch_p50:.2f} | {b32.ms_per_batch_p50:.1f} | {b32.sentences_per_s:.0f} |"
        )
    base = report.baseline
    if base:
        lines.append(
            f"| dictionary baseline | {base.f1:.4f} | {base.precision:.4f} | {base.recall:.4f} | "
            f"{(base.f1 - report.f1(REFERENCE.report_key)) * 100:+.2f} | - | - | - | - |"
        )
    gate = report.gate
    quality = report.quality
    if quality:
        need = quality.required_margin_points
        lines += [
            "",
            f"Quality floor: FP32 F1 {quality.model_f1:.4f} vs dictionary baseline {quality.baseline_f1:.4f} "
            f"({quality.margin_points:+.2f} points; required: "
            + ("off" if need is None else f"+{need:g}")
            + (f", MIN_F1 {quality.min_f1:g}" if quality.min_f1 is not None else "")
            + f"): **{'passed' if quality.passed else 'FAILED'}**",
        ]
        if quality.zero_f1_types:
            lines += ["", f"Warning: F1 0 on entity types {', '.join(quality.zero_f1_types)}."]
        if base and base.types_only_in_test:
            lines += ["", f"Warning: types only in the test split: {', '.join(base.types_only_in_test)}."]
    lines += [
        "",
        f"Gate: the served CPU variant may lose at most {gate.max_f1_drop_points} F1 points: "
        f"**{'passed' if gate.passed else 'FAILED'}**" + (f" ({'; '.join(gate.failures)})" if gate.failures else ""),
        "",
    ]
    lines += served_lines(report.served, gate)
    lines += ["## Per entity type", ""]
    types = sorted({t for v in report.variants.values() for t in v.per_type})
    lines.append("| variant | " + " | ".join(f"{t} P / R / F1" for t in types) + " |")
    lines.append("|---|" + "---|" * len(types))
    for name, v in report.variants.items():
        cells = []
        for t in types:
            s = v.per_type.get(t)
            cells.append(f"{s.precision:.3f} / {s.recall:.3f} / {s.f1:.3f}" if s else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    support = {t: next(v.per_type[t].support for v in report.variants.values() if t in v.per_type) for t in types}
    lines += ["", "Support (gold entities): " + ", ".join(f"{t} {n}" for t, n in support.items()), ""]
    return "\n".join(lines)
