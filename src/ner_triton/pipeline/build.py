"""``make build``: fine-tune -> (prune) -> export -> quantize -> evaluate every variant -> choose the served
CPU variant (gate, then a speed race on this machine) -> report -> install.

Run as ``ner-build`` (or ``python build/build.py``); settings come from the environment
(see :meth:`ner_triton.settings.BuildSettings.from_env`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ner_triton.cli import Command
from ner_triton.data import Sentence, load_split
from ner_triton.labels import LabelMap
from ner_triton.modeling import NerModel, load_tokenizer
from ner_triton.pipeline.baseline import DictionaryBaseline, enforce_quality, quality_verdict
from ner_triton.pipeline.bootstrap import half_width, sentence_counts, uncertainty
from ner_triton.pipeline.evaluate import (
    EvalResult,
    Predictor,
    evaluate,
    evaluate_documents,
    measure_latency,
    onnx_predictor,
    torch_predictor,
)
from ner_triton.pipeline.export import export_onnx
from ner_triton.pipeline.finetune import TRAIN_SUMMARY, finetune, prune_and_recover, subsample
from ner_triton.pipeline.gate import RULE, enforce_gate, fallback_message, gate
from ner_triton.pipeline.quantize import RECIPES, Calibration, quantize_variant
from ner_triton.pipeline.report import write_report
from ner_triton.pipeline.serve import candidates, choose, race
from ner_triton.pipeline.signal_baseline import signal_baseline
from ner_triton.record import SCHEMA, BuildReport
from ner_triton.repository.rollout import export_repository
from ner_triton.schema import LABELS_FILE, MODEL_DIR, ONNX_DIR, REPORT_MD
from ner_triton.settings import BuildSettings
from ner_triton.variants import REFERENCE, TORCH_REPORT_KEY, get

log = logging.getLogger(__name__)


def _size_mb(paths: list[Path]) -> float:
    return round(sum(p.stat().st_size for p in paths) / 1e6, 2)


def _versions() -> dict[str, str]:
    import onnxruntime
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def quantize_variants(settings: BuildSettings, model_dir: Path, fp32: Path, output_dir: Path) -> dict[str, Path]:
    """Every variant with a quantization recipe (:data:`~ner_triton.pipeline.quantize.RECIPES`), written next
    to the FP32 one; report key -> path."""
    q = settings.quant
    calibration = Calibration(
        tokenizer=load_tokenizer(str(model_dir)),
        sentences=subsample(load_split(settings.source, "train"), q.calibration_sentences, settings.train.seed),
        num_labels=len(LabelMap.load(model_dir / LABELS_FILE)),
        length=q.calibration_length,
        keep_float=q.keep_float,
        smooth_alpha=q.smooth_alpha,
    )
    variants = [get(key) for key in RECIPES]
    return {v.report_key: quantize_variant(v, fp32, output_dir, calibration) for v in variants}


def eval_sentences(settings: BuildSettings) -> list[Sentence]:
    """The test split the variants and the baseline are scored on (a seeded subset with MAX_EVAL_SENTENCES)."""
    return subsample(load_split(settings.source, "test"), settings.max_eval_sentences, settings.train.seed)


def baseline_scores(settings: BuildSettings, labels: LabelMap, test: Sequence[Sentence]) -> dict[str, Any]:
    """The dictionary baseline on ``test`` (fit on the training split the model saw), and a warning for entity
    types of the test split that the model has no label for."""
    train = subsample(load_split(settings.source, "train"), settings.train.max_train_sentences, settings.train.seed)
    unseen = sorted({t[2:] for s in test for t in s.tags if t != "O"} - set(labels.entity_types))
    if unseen:
        log.warning("entity types %s occur in the test split but not in training or validation: the model has no "
                    "label for them and scores 0 on them; add training examples of them.", unseen)  # fmt: skip
    return {**DictionaryBaseline.fit(train).evaluate(test).as_dict(), "types_only_in_test": unseen}


def evaluate_variants(
    settings: BuildSettings,
    model_dir: Path,
    onnx_paths: dict[str, Path],
    test: Sequence[Sentence],
    counts: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Scores on ``test``, file size and in-process latency of every variant, side by side (and into
    ``counts``, when given, each variant's per-sentence entity counts for the bootstrap)."""
    import torch

    torch.set_num_threads(settings.threads)
    tokenizer = load_tokenizer(str(model_dir))
    labels = LabelMap.load(model_dir / LABELS_FILE)
    texts = [s.text for s in test]
    weight_files = [p for p in model_dir.iterdir() if p.suffix == ".safetensors"]
    candidates: dict[str, tuple[Predictor, list[Path]]] = {
        TORCH_REPORT_KEY: (torch_predictor(NerModel.load(model_dir)), weight_files),
    }
    for name, path in onnx_paths.items():
        candidates[name] = (onnx_predictor(path, settings.threads), [path])
    out: dict[str, dict[str, Any]] = {}
    for name, (predictor, files) in candidates.items():
        result = evaluate(predictor, test, tokenizer, labels, settings.eval_batch_size, desc=f"test {name}")
        if counts is not None:
            counts[name] = sentence_counts([s.tags for s in test], result.predictions)
        latency = {
            f"batch_{b}": vars(measure_latency(predictor, tokenizer, texts, b, min_batches=n))
            for b, n in ((1, 100), (32, 10))
        }
        out[name] = {**result.as_dict(), "size_mb": _size_mb(files), "latency": latency}
        log.info(
            "%-18s F1 %.4f  %.1f MB  b1 %.2f ms  b32 %.0f sent/s",
            name,
            result.f1,
            out[name]["size_mb"],
            latency["batch_1"]["ms_per_batch_p50"],
            latency["batch_32"]["sentences_per_s"],
        )
    ref = out[REFERENCE.report_key]["f1"]
    for v in out.values():
        v["delta_f1_points"] = round((v["f1"] - ref) * 100, 2)
    return out


def document_mode_scores(
    settings: BuildSettings, model_dir: Path, onnx_paths: dict[str, Path], test: Sequence[Sentence],
    variants: dict[str, dict[str, Any]], counts: dict[str, np.ndarray] | None = None,
) -> dict[str, Any] | None:  # fmt: skip
    """The test split in the document mode too, as the server serves it (each document's sentences sent as one
    text, windowed: :func:`~ner_triton.pipeline.evaluate.evaluate_documents`) for every ONNX form, beside the
    sentence mode of ``variants`` (and into ``counts``, when given, each form's per-sentence entity counts in the
    document mode); None when the model was trained without context or the test split marks no documents
    (:class:`~ner_triton.record.DocumentMode`)."""
    context = settings.train.context_tokens
    if not context:
        return None
    in_docs = sum(1 for s in test if s.in_document)
    if not in_docs:
        log.info("CONTEXT=%d: the test split marks no documents; only the sentence mode is scored", context)
        return None
    tokenizer = load_tokenizer(str(model_dir))
    labels = LabelMap.load(model_dir / LABELS_FILE)
    document: dict[str, float] = {}
    per_type: dict[str, dict[str, float]] = {}
    ms: dict[str, float] = {}

    def timed(predictor: Predictor, name: str, mode: str) -> tuple[EvalResult, float]:
        t = time.perf_counter()
        if mode == "document":
            result = evaluate_documents(predictor, test, model_dir, labels, desc=f"test {name} (documents)")
        else:
            result = evaluate(predictor, test, tokenizer, labels, settings.eval_batch_size, desc=f"test {name}")
        return result, round((time.perf_counter() - t) * 1000 / len(test), 3)

    for name, path in onnx_paths.items():
        predictor = onnx_predictor(path, settings.threads)
        reference = name == REFERENCE.report_key  # the cost of each mode, on the reference (sentence mode again)
        ms_sentence = timed(predictor, name, "sentence")[1] if reference else 0.0
        result, ms_document = timed(predictor, name, "document")
        if reference:
            ms = {"sentence": ms_sentence, "document": ms_document}
        document[name] = result.f1
        if counts is not None:
            counts[name] = sentence_counts([s.tags for s in test], result.predictions)
        per_type[name] = {t: s["f1"] for t, s in result.as_dict()["per_type"].items()}
        log.info("%-18s F1 sentence mode %.4f, document mode %.4f", name, variants[name]["f1"], result.f1)
    return {
        "context_tokens": context,
        "sentences_in_documents": in_docs,
        "sentence": {name: variants[name]["f1"] for name in variants},
        "document": document,
        "document_per_type": per_type,
        "ms_per_sentence": ms,
    }


def validation_sentences(settings: BuildSettings) -> list[Sentence]:
    """The validation split as fine-tuning saw it (the same seeded subset with MAX_EVAL_SENTENCES)."""
    return subsample(load_split(settings.source, "valid"), settings.max_eval_sentences, settings.train.seed)


def heldout_uncertainty(
    settings: BuildSettings,
    model_dir: Path,
    onnx_paths: dict[str, Path],
    test_counts: dict[str, np.ndarray],
    documents: bool = False,
) -> dict[str, Any]:
    """The intervals (``BuildReport.uncertainty``): every variant on the test split, and the ONNX forms on the
    validation and test splits pooled - all the held-out data the build has, which the gate decides on.
    ``documents``: ``test_counts`` are the document mode's, and the validation split is scored that way too.

    Fine-tuning chose its best epoch on the validation split, which flatters FP32's own F1 there a little;
    the gate judges the *difference* between forms of that one model, on the same sentences, which that
    choice does not favour."""
    valid = validation_sentences(settings)
    heldout = {k: test_counts[k] for k in onnx_paths}
    mode = ", document mode" if documents else ""
    decided_on = f"the test split ({len(next(iter(heldout.values())))} sentences{mode}; the validation split is empty)"
    if valid:
        tokenizer = load_tokenizer(str(model_dir))
        labels = LabelMap.load(model_dir / LABELS_FILE)
        gold = [s.tags for s in valid]
        for name, path in onnx_paths.items():
            predictor = onnx_predictor(path, settings.threads)
            if documents:
                result = evaluate_documents(predictor, valid, model_dir, labels, desc=f"valid {name} (documents)")
            else:
                result = evaluate(predictor, valid, tokenizer, labels, settings.eval_batch_size, desc=f"valid {name}")
            heldout[name] = np.concatenate([sentence_counts(gold, result.predictions), test_counts[name]])
        decided_on = f"valid+test pooled ({len(valid) + len(test_counts[REFERENCE.report_key])} sentences{mode})"
    out = uncertainty(test_counts, heldout, REFERENCE.report_key, settings.quant.max_f1_drop_points, decided_on,
                      settings.train.seed)  # fmt: skip
    log.info("paired bootstrap (%d resamples, %d + %d sentences): %.2f s", out["resamples"], out["test_sentences"],
             out["heldout_sentences"], out["seconds"])  # fmt: skip
    tol = settings.quant.max_f1_drop_points
    for name, row in out["heldout"].items():
        if name == REFERENCE.report_key:
            continue
        t = out["test"][name]
        log.info("%-18s vs FP32: test %+.2f [%+.2f, %+.2f], %s %+.2f [%+.2f, %+.2f] points", name,
                 t["delta_points"], t["delta_low"], t["delta_high"], decided_on, row["delta_points"],
                 row["delta_low"], row["delta_high"])  # fmt: skip
        if half_width(t) > tol:
            log.warning("the test split (%d sentences, %d entities) is too small to tell a %g-point loss of %s from "
                        "noise (interval +/-%.2f points); the gate decides on %s (+/-%.2f)", out["test_sentences"],
                        out["test_entities"], tol, name, half_width(t), decided_on, half_width(row))  # fmt: skip
    return out


def serve_choice(
    settings: BuildSettings,
    model_dir: Path,
    onnx_paths: dict[str, Path],
    variants: dict[str, dict[str, Any]],
    test: Sequence[Sentence],
    uncertain: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The served CPU variant (``BuildReport.served``) and the gate verdict on it (``BuildReport.gate``).

    The gate decides on ``uncertain``'s held-out intervals (:func:`heldout_uncertainty`; point estimates
    without it). Variants that are not served are reported (``gate.not_served``) without failing the build;
    when no INT8 form passes, FP32 is served (``fallback``) unless ``REQUIRE_INT8=1``."""
    q = settings.quant
    # Every candidate races (the report shows what a variant outside the gate would have given); only those
    # within the gate can be chosen.
    racing = {v.report_key: onnx_paths[v.report_key] for v in candidates(q.serve) if v.report_key in onnx_paths}
    texts = [s.text for s in test[:512]]
    speeds = race(racing, load_tokenizer(str(model_dir)), texts, settings.threads) if racing else {}
    intervals = None if uncertain is None else uncertain["heldout"]
    decided_on = "" if uncertain is None else uncertain["decided_on"]
    served = choose(variants, speeds, q.max_f1_drop_points, q.serve, intervals, decided_on,
                    fallback=not q.require_int8)  # fmt: skip
    everything = gate(variants, q.max_f1_drop_points, None, intervals, decided_on or "held-out data")
    verdict = {
        "max_f1_drop_points": q.max_f1_drop_points,
        "reference": everything["reference"],
        "served": served["variant"],
        "passed": served["passed"],
        "failures": [] if served["passed"] else served["failures"],
        "not_served": everything["failures"] if served["passed"] else [],
        "fallback": served["fallback"],
        "rule": RULE if intervals is not None else "refused when its test point estimate loses more than the tolerance",
    }
    return served, verdict


def build(settings: BuildSettings) -> Path:
    """Run every step into ``settings.artifacts``; returns the report path.

    When no INT8 form passes the gate, FP32 is served and installed (the log, the report and ``served.json``
    say so), unless ``REQUIRE_INT8=1``.

    Raises:
        QualityGateError: after the report is written, when the FP32 model does not clear the quality floor
            (:mod:`~ner_triton.pipeline.baseline`), or with ``REQUIRE_INT8=1`` (or a forced ``SERVE``) when no
            CPU variant that may be served passed the INT8 gate (:mod:`~ner_triton.pipeline.serve`); nothing
            is installed.
    """
    t0 = time.perf_counter()
    artifacts = settings.artifacts
    if settings.reuse_model and (artifacts / MODEL_DIR / TRAIN_SUMMARY).is_file():
        model_dir = artifacts / MODEL_DIR
        log.info("REUSE_MODEL=1: using the fine-tuned model in %s (no training)", model_dir)
    elif settings.prune.active:  # fine-tune, then prune + recover into artifacts/model
        unpruned = finetune(settings, settings.source, artifacts / f"{MODEL_DIR}_unpruned")
        model_dir = prune_and_recover(settings, settings.source, unpruned, artifacts / MODEL_DIR)
    else:
        model_dir = finetune(settings, settings.source, artifacts / MODEL_DIR)
    fp32 = export_onnx(settings, model_dir, artifacts / ONNX_DIR)
    onnx_paths = {REFERENCE.report_key: fp32, **quantize_variants(settings, model_dir, fp32, artifacts / ONNX_DIR)}
    test = eval_sentences(settings)
    test_counts: dict[str, np.ndarray] = {}
    variants = evaluate_variants(settings, model_dir, onnx_paths, test, test_counts)
    summary = json.loads((model_dir / TRAIN_SUMMARY).read_text(encoding="utf-8"))
    document_counts: dict[str, np.ndarray] = {}
    document_mode = document_mode_scores(settings, model_dir, onnx_paths, test, variants, document_counts)
    # a model trained with document context is served in the documents mode: the gate decides on that mode
    scores = variants if document_mode is None else {
        k: {**v, "f1": document_mode["document"][k]} if k in document_mode["document"] else v
        for k, v in variants.items()
    }  # fmt: skip
    uncertain = heldout_uncertainty(settings, model_dir, onnx_paths, document_counts or test_counts,
                                    documents=document_mode is not None)  # fmt: skip
    served, verdict = serve_choice(settings, model_dir, onnx_paths, scores, test, uncertain)
    if served["variant"] is not None:  # what the served model's quality signals were on the test split
        onnx = onnx_paths[get(served["variant"]).report_key]
        served["signals"] = asdict(signal_baseline(model_dir, onnx, [s.text for s in test], settings.threads))
    baseline = baseline_scores(settings, LabelMap.load(model_dir / LABELS_FILE), test)
    quality = quality_verdict(variants[REFERENCE.report_key]["f1"], baseline["f1"], settings.quality)
    per_type = variants[REFERENCE.report_key]["per_type"]
    zero = sorted(t for t, s in per_type.items() if s["f1"] == 0 and s["support"] > 0)
    if zero:
        log.warning("the model scores F1 0 on entity types %s: it never finds them in the test split", zero)
    report = BuildReport.from_dict(
        {
            "schema": SCHEMA,
            "model": summary["model"],
            "data": str(settings.data),
            "test_sentences": len(test),
            "training": {k: v for k, v in summary.items() if k != "model"},
            "variants": variants,
            "served": served,
            "gate": verdict,
            "baseline": baseline,
            "quality": {**quality, "zero_f1_types": zero},
            "settings": settings.as_dict(),
            "versions": _versions(),
            "machine": {"cpus": os.cpu_count(), "threads": settings.threads, "platform": platform.platform()},
            "build_seconds": round(time.perf_counter() - t0, 1),
            "uncertainty": uncertain,
            "document_mode": document_mode,
        },
        source="the build's figures",
    )
    path = write_report(report, artifacts)
    log.info("report written to %s", path)
    enforce_quality(quality, artifacts / REPORT_MD)
    if verdict["fallback"]:
        log.warning(fallback_message(served["failures"], artifacts / REPORT_MD))
    enforce_gate(verdict, artifacts / REPORT_MD)
    if settings.repository is not None:  # only a model that passed both gates reaches the served repository
        export_repository(artifacts, settings.repository)
    return path


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    """Settings come from the environment (the Makefile passes them): see ``BuildSettings.from_env``."""


def _run(args: argparse.Namespace) -> int:
    path = build(BuildSettings.from_env())
    print((path.parent / REPORT_MD).read_text(encoding="utf-8"))
    return 0


main = Command(
    "ner-build",
    __doc__ or "",
    _add_arguments,
    _run,
    epilog="Settings from the environment: MODEL, DATA, SCHEME, HUB_TOKENS, HUB_TAGS, HUB_SPLITS, ARTIFACTS, EPOCHS,\n"
    "MIN_STEPS, MAX_EPOCHS, MAX_TRAIN_SENTENCES, MAX_EVAL_SENTENCES, MODEL_REPOSITORY, REUSE_MODEL, CASING, SEED, LR,\n"
    "BATCH_SIZE, "
    "CALIB_SENTENCES, SMOOTHQUANT, MAX_F1_DROP, SERVE, REQUIRE_INT8, MIN_F1, BASELINE_MARGIN, PRUNE (docs/build.md).",
).main


if __name__ == "__main__":
    raise SystemExit(main())
