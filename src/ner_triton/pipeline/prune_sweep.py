"""``make prune-sweep``: several pruning levels of one fine-tuned model, side by side with the unpruned one.

Every level goes through the same steps as ``make build`` (prune + distilled recovery -> ONNX export ->
static INT8 QDQ -> CoNLL-2003 test evaluation) and is measured in the same run as the unpruned INT8
model: test F1, parameters, INT8 file size, in-process INT8 throughput at batch 32 and batch-1 latency,
each also relative to the unpruned model. Writes ``artifacts/prune/report.{json,md}`` and ``tradeoff.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ner_triton.cli import Command
from ner_triton.data import load_split
from ner_triton.errors import ConfigError
from ner_triton.labels import LabelMap
from ner_triton.modeling import NerModel, load_tokenizer
from ner_triton.pipeline.evaluate import evaluate, measure_latency, onnx_predictor
from ner_triton.pipeline.export import export_onnx
from ner_triton.pipeline.finetune import TRAIN_SUMMARY, prune_and_recover, subsample
from ner_triton.pipeline.quantize import Calibration, quantize_variant
from ner_triton.schema import LABELS_FILE
from ner_triton.settings import BuildSettings, PruneSettings
from ner_triton.variants import INT8

log = logging.getLogger(__name__)

DEFAULT_LEVELS = ("heads=0.25", "layers=2", "layers=2,heads=0.25", "layers=1,heads=0.25", "layers=2,epochs=2")


def measure_level(settings: BuildSettings, model_dir: Path, out: Path) -> dict[str, Any]:
    """Export + static INT8 + test F1 + in-process speed of the model in ``model_dir``."""
    tokenizer = load_tokenizer(str(model_dir))
    labels = LabelMap.load(model_dir / LABELS_FILE)
    fp32 = export_onnx(settings, model_dir, out / "onnx")
    calibration = subsample(
        load_split(settings.source, "train"), settings.quant.calibration_sentences, settings.train.seed
    )
    int8 = quantize_variant(
        INT8, fp32, out / "onnx", Calibration(tokenizer, calibration, len(labels), settings.quant.calibration_length)
    )
    test = subsample(load_split(settings.source, "test"), settings.max_eval_sentences, settings.train.seed)
    predictor = onnx_predictor(int8, settings.threads)
    result = evaluate(predictor, test, tokenizer, labels, settings.eval_batch_size, desc=f"test {out.name}")
    model = NerModel.load(model_dir)
    return {
        "f1": result.f1,
        "parameters": sum(p.numel() for p in model.parameters()),
        "heads_per_layer": model.heads_per_layer(),
        "int8_mb": round(int8.stat().st_size / 1e6, 2),
        "int8_path": str(int8),
        "model_dir": str(model_dir),
    }


def speed_pass(settings: BuildSettings, rows: list[dict[str, Any]], rounds: int = 3) -> None:
    """In-process INT8 speed of every level, measured round-robin ``rounds`` times (median kept), so that
    machine noise hits every level alike; fills ``int8_b32_sentences_per_s`` and ``int8_b1_ms_p50``."""
    import statistics

    test = subsample(load_split(settings.source, "test"), settings.max_eval_sentences, settings.train.seed)
    texts = [s.text for s in test]
    models = [(onnx_predictor(Path(r["int8_path"]), settings.threads), load_tokenizer(r["model_dir"])) for r in rows]
    b32: list[list[float]] = [[] for _ in rows]
    b1: list[list[float]] = [[] for _ in rows]
    for _ in range(rounds):
        for k, (predictor, tokenizer) in enumerate(models):
            b32[k].append(measure_latency(predictor, tokenizer, texts, 32, min_batches=10).sentences_per_s)
            b1[k].append(measure_latency(predictor, tokenizer, texts, 1, min_batches=100).ms_per_batch_p50)
    for k, row in enumerate(rows):
        row["int8_b32_sentences_per_s"] = round(statistics.median(b32[k]), 1)
        row["int8_b1_ms_p50"] = round(statistics.median(b1[k]), 2)


def sweep(settings: BuildSettings, model_dir: Path, levels: list[str], output: Path) -> Path:
    if not (model_dir / TRAIN_SUMMARY).is_file():
        raise ConfigError(f"{model_dir} is not a fine-tuned model: run `make build` first (or pass --model-dir).")
    t0 = time.perf_counter()
    output.mkdir(parents=True, exist_ok=True)
    base = measure_level(settings, model_dir, output / "unpruned")
    rows = [{"level": "unpruned", **base}]
    for spec in levels:
        ps = PruneSettings.parse(spec)
        name = spec.replace("=", "").replace(",", "_")
        level_settings = replace(settings, prune=ps)
        pruned = prune_and_recover(level_settings, settings.source, model_dir, output / name / "model")
        summary = json.loads((pruned / TRAIN_SUMMARY).read_text(encoding="utf-8"))["pruning"]
        row = {"level": spec, **measure_level(level_settings, pruned, output / name)}
        row["recovery_seconds"] = summary["recovery"]["train_seconds"]
        row["dropped_layers"] = summary["dropped_layers"]
        rows.append(row)
        log.info("%s: %s", spec, row)
    finish(settings, rows, model_dir, output, time.perf_counter() - t0)
    return output / "report.json"


def finish(settings: BuildSettings, rows: list[dict[str, Any]], model_dir: Path, output: Path, seconds: float) -> None:
    """Speed pass, ratios against the unpruned row, report files."""
    t0 = time.perf_counter()
    speed_pass(settings, rows)
    base = rows[0]
    for row in rows:
        row["delta_f1_points"] = round((row["f1"] - base["f1"]) * 100, 2)
        row["parameters_rel"] = round(row["parameters"] / base["parameters"], 3)
        row["int8_mb_rel"] = round(row["int8_mb"] / base["int8_mb"], 3)
        row["throughput_rel"] = round(row["int8_b32_sentences_per_s"] / base["int8_b32_sentences_per_s"], 3)
        row["b1_latency_rel"] = round(row["int8_b1_ms_p50"] / base["int8_b1_ms_p50"], 3)
    report = {
        "model": str(model_dir),
        "data": str(settings.data),
        "machine": {"cpus": os.cpu_count(), "threads": settings.threads},
        "seconds": round(seconds + time.perf_counter() - t0, 1),
        "levels": rows,
    }
    (output / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (output / "report.md").write_text(render(report), encoding="utf-8")
    plot(report, output / "tradeoff.png")


def render(report: dict[str, Any]) -> str:
    lines = [
        "# Pruning trade-off (INT8 static QDQ, test split, in-process)",
        "",
        "| level | test F1 | ΔF1 (points) | parameters | × params | INT8 MB | b32 sent/s | × throughput "
        "| b1 ms | × b1 latency | heads per layer |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["levels"]:
        lines.append(
            f"| {r['level']} | {r['f1']:.4f} | {r['delta_f1_points']:+.2f} | {r['parameters'] / 1e6:.1f} M | "
            f"{r['parameters_rel']:.2f} | {r['int8_mb']:.1f} | {r['int8_b32_sentences_per_s']:.0f} | "
            f"{r['throughput_rel']:.2f} | {r['int8_b1_ms_p50']:.2f} | {r['b1_latency_rel']:.2f} | "
            f"{r['heads_per_layer']} |"
        )
    lines += [
        "",
        f"All levels built and measured in one run ({report['seconds']:.0f} s); speeds are medians of 3 round-robin "
        "passes over all levels; ratios are against `unpruned`.",
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for r in report["levels"]:
        ax.scatter(r["throughput_rel"], r["f1"], s=60)
        ax.annotate(r["level"], (r["throughput_rel"], r["f1"]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("INT8 throughput at batch 32, relative to unpruned")
    ax.set_ylabel("test entity F1 (INT8)")
    ax.set_title("Pruning: accuracy vs speed")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, default=None, help="fine-tuned model (default: $ARTIFACTS/model)")
    parser.add_argument("--levels", nargs="+", default=list(DEFAULT_LEVELS), help="PRUNE specs, one per level")
    parser.add_argument("--output", type=Path, default=None, help="default: $ARTIFACTS/prune")
    parser.add_argument("--remeasure", action="store_true", help="only redo the speed pass of an existing sweep")


def _run(args: argparse.Namespace) -> int:
    settings = BuildSettings.from_env()
    model_dir = args.model_dir or settings.artifacts / "model"
    output = args.output or settings.artifacts / "prune"
    if args.remeasure:
        previous = json.loads((output / "report.json").read_text(encoding="utf-8"))
        finish(settings, previous["levels"], model_dir, output, previous["seconds"])
        path = output / "report.json"
    else:
        path = sweep(settings, model_dir, args.levels, output)
    print(path.with_suffix(".md").read_text(encoding="utf-8"))
    return 0


main = Command("ner-prune-sweep", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
