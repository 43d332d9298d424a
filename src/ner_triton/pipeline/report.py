"""The build report: ``report.json`` (the :class:`~ner_triton.record.BuildReport`) and ``report.md`` (for people)."""

from __future__ import annotations

from pathlib import Path

from ner_triton.record import BuildReport, DocumentMode, GateVerdict, Served, Uncertainty
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
        f"| candidate | test F1 | test delta | delta on {served.decided_on or 'held-out data'} (95% interval) "
        "| within gate | sent/s (race) |",
        "|---|---|---|---|---|---|",
    ]
    for key, c in served.candidates.items():
        speed = "-" if c.sentences_per_s is None else f"{c.sentences_per_s:.0f}"
        spread = "-" if c.delta_low is None or c.delta_high is None else f"{c.delta_low:+.2f} to {c.delta_high:+.2f}"
        lines.append(f"| {key} | {c.f1:.4f} | {c.delta_f1_points:+.2f} | {spread} | "
                     f"{'yes' if c.passed_gate else 'no'} | {speed} |")  # fmt: skip
    if served.fallback:
        lines += ["", "**FP32 fallback**: no INT8 variant passed the accuracy gate, so `ner` serves FP32 (exact, "
                  "slower). `REQUIRE_INT8=1` fails the build instead."]  # fmt: skip
    if gate.not_served:
        lines += ["", "Not served (reported, not gated): " + "; ".join(gate.not_served)]
    return [*lines, ""]


def uncertainty_lines(u: Uncertainty) -> list[str]:
    """Every variant's F1 and difference from FP32 with its 95% interval, on the test split and on the data the
    gate decides on, and whether the test split can tell a loss of the tolerance from noise."""
    lines = [
        "## Uncertainty",
        "",
        f"95% intervals, {u.method}, {u.resamples} resamples, seed {u.seed} ({u.seconds:.2f} s). Test split: "
        f"{u.test_sentences} sentences, {u.test_entities} entities; the gate decides on {u.decided_on}: "
        f"{u.heldout_entities} entities.",
        "",
        "| variant | test F1 | test delta vs onnx_fp32 | held-out F1 | held-out delta (gate) |",
        "|---|---|---|---|---|",
    ]
    for name, t in u.test.items():
        h = u.heldout.get(name)
        held = "-" if h is None else (f"{h.f1:.4f} [{h.f1_low:.4f}, {h.f1_high:.4f}] | {h.delta_points:+.2f} "
                                      f"[{h.delta_low:+.2f}, {h.delta_high:+.2f}]")  # fmt: skip
        lines.append(f"| {name} | {t.f1:.4f} [{t.f1_low:.4f}, {t.f1_high:.4f}] | {t.delta_points:+.2f} "
                     f"[{t.delta_low:+.2f}, {t.delta_high:+.2f}] | {held} |")  # fmt: skip
    noisy = [n for n, t in u.test.items() if t.half_width > u.tolerance_points]
    if noisy:
        lines += ["", f"The test split alone is too small to tell a {u.tolerance_points:g}-point loss from noise for "
                  f"{', '.join(noisy)} (interval half-width above {u.tolerance_points:g} points)."]  # fmt: skip
    return [*lines, ""]


def document_mode_lines(d: DocumentMode) -> list[str]:
    """The test split read sentence by sentence and read in its documents as served (``CONTEXT``), side by side."""
    types = sorted({t for v in d.document_per_type.values() for t in v})
    lines = [
        f"## Document context (trained with CONTEXT={d.context_tokens} sub-tokens per side)",
        "",
        f"{d.sentences_in_documents} test sentences have neighbours in their document. Sentence mode: each sent "
        "alone (the table above); document mode: each document's sentences sent as one text and windowed, as the "
        "server serves the client's documents mode (`extract_documents`), each sentence scored on its own tokens.",
        "",
        "| variant | F1 sentence mode | F1 document mode | gain (points) | " + " | ".join(types) + " |",
        "|---|---|---|---|" + "---|" * len(types),
    ]
    for name, f1 in d.document.items():
        alone = d.sentence.get(name)
        gain = "-" if alone is None else f"{(f1 - alone) * 100:+.2f}"
        cells = " | ".join(f"{d.document_per_type[name].get(t, 0.0):.3f}" for t in types)
        lines.append(f"| {name} | {'-' if alone is None else f'{alone:.4f}'} | {f1:.4f} | {gain} | {cells} |")
    cost = ", ".join(f"{mode} {ms:.2f} ms" for mode, ms in d.ms_per_sentence.items())
    lines += [
        "",
        f"Cost per sentence (FP32 ONNX, in process, whole test split; sentence mode in batches of the "
        f"build's evaluation, document mode one piece per run): {cost}.",
        "",
    ]
    return lines


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
    if gate.rule:
        lines += [f"Rule: an INT8 variant is {gate.rule}.", ""]
    lines += served_lines(report.served, gate)
    if report.uncertainty is not None:
        lines += uncertainty_lines(report.uncertainty)
    if report.document_mode is not None:
        lines += document_mode_lines(report.document_mode)
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
