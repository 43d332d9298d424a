"""Accuracy and batching **through the running server**: CoNLL-2003 text in, spans out, scored.

Each gold sentence's text (tokens joined by spaces) goes to the ensemble from ``concurrency``
client threads, one sentence per request (online traffic); ``--mode document`` sends each document instead, its
sentences as one text (the client's documents mode, ``extract_documents``). The returned character spans become
IOB2 tags of the gold tokens and are scored with the same seqeval code as the build, so the
figure is directly comparable with the in-process F1 of ``artifacts/report.json``. Triton's
statistics before and after give the BERT step's average executed batch size.

    ner-eval-served --split test --concurrency 16          # or: make eval-served
    ner-eval-served --mode document                        # or: make eval-served MODE=document
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ner_triton.cli import Command, emit_json
from ner_triton.client import NerClient
from ner_triton.data import Sentence, documents_of, load_split
from ner_triton.pipeline.evaluate import score_tags, sentence_tags
from ner_triton.record import BuildReport
from ner_triton.repository.model_configs import bert_step_of, stats_model_of
from ner_triton.schema import ENSEMBLE
from ner_triton.settings import data_source

log = logging.getLogger(__name__)


PHASES = ("queue", "compute_input", "compute_infer", "compute_output")
MODES = ("sentence", "document")


def model_counts(client: NerClient, model: str) -> tuple[int, int, dict[str, int]]:
    """``(inference_count, execution_count, cumulative ns per phase)`` of one model from Triton's statistics."""
    stats = client.statistics(model)["model_stats"]
    inference = sum(int(s.get("inference_count", 0)) for s in stats)
    execution = sum(int(s.get("execution_count", 0)) for s in stats)
    phases: dict[str, int] = {}
    for s in stats:
        for phase, value in s.get("inference_stats", {}).items():
            phases[phase] = phases.get(phase, 0) + int(value.get("ns", 0))
    return inference, execution, phases


def phase_ms(before: tuple[int, int, dict[str, int]], after: tuple[int, int, dict[str, int]]) -> dict[str, Any]:
    """One model's batching and per-request time in each phase (Triton adds a batch's compute time to each of
    its requests: compute per request = per batch) between two :func:`model_counts` snapshots."""
    (inf0, exe0, ph0), (inf1, exe1, ph1) = before, after
    requests, executions = max(inf1 - inf0, 1), max(exe1 - exe0, 1)
    out: dict[str, Any] = {
        "inferences": inf1 - inf0,
        "executions": exe1 - exe0,
        "avg_batch_size": round((inf1 - inf0) / executions, 2),
    }
    for k in PHASES:
        out[f"{k}_ms"] = round((ph1.get(k, 0) - ph0.get(k, 0)) / requests / 1e6, 3)
    return out


def evaluate_served(
    url: str,
    sentences: Sequence[Sentence],
    model: str = ENSEMBLE,
    concurrency: int = 16,
    timeout_s: float = 60.0,
    mode: str = "sentence",
) -> dict[str, Any]:
    """Entity scores of the served ensemble on ``sentences`` plus throughput and batching figures; ``mode``:
    one request per sentence, or (``document``) one per document (:func:`~ner_triton.data.documents_of`)."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}: choose one of {MODES}")
    local = threading.local()

    def client() -> NerClient:
        if not hasattr(local, "client"):
            local.client = NerClient(url, model, timeout_s)
        return local.client  # type: ignore[no-any-return]

    latencies: list[float] = []

    def one(document: list[Sentence]) -> list[list[str]]:
        t = time.perf_counter()
        if mode == "document":
            (found,) = client().extract_documents([[s.text for s in document]])
        else:
            found = client().extract([s.text for s in document])
        latencies.append(time.perf_counter() - t)
        return [sentence_tags(s, entities) for s, entities in zip(document, found, strict=True)]

    bert = stats_model_of(model)  # the BERT step (or the one-step ``ner`` itself): its batches
    with NerClient(url, model, timeout_s) as admin:
        before = model_counts(admin, bert)
        t0 = time.perf_counter()
        units = documents_of(sentences) if mode == "document" else [[s] for s in sentences]
        with ThreadPoolExecutor(concurrency) as pool:
            done = tqdm(pool.map(one, units), total=len(units), desc=f"served {model} ({mode})", unit=mode)
            pred = [tags for unit in done for tags in unit]
        seconds = time.perf_counter() - t0
        batching = phase_ms(before, model_counts(admin, bert))
    result = score_tags([s.tags for s in sentences], pred)
    ms = np.array(latencies) * 1000.0
    return {
        "model": model,
        "mode": mode,
        "requests": len(latencies),
        "bert_step": bert,
        "url": url,
        **result.as_dict(),
        "concurrency": concurrency,
        "seconds": round(seconds, 2),
        "sentences_per_s": round(len(sentences) / seconds, 1),
        "latency_ms": {f"p{q}": round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99)},
        "bert_inferences": batching["inferences"],
        "bert_executions": batching["executions"],
        "bert_avg_batch_size": batching["avg_batch_size"],
        # Triton adds a batch's times to every request in it: per request = what each request waited / ran.
        "bert_ms_per_request": {k: batching[f"{k}_ms"] for k in PHASES},
    }


def served_report_key(model: str, report: BuildReport) -> str:
    """The report key of the variant ``model`` serves: the build's choice for ``ner``, else from the name."""
    if model == ENSEMBLE and report.served.report_key:
        return report.served.report_key
    return bert_step_of(model).report_key


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="127.0.0.1:8001")
    parser.add_argument("--model", default=ENSEMBLE)
    parser.add_argument("--data", default=None, help="CoNLL-2003 directory (default: $DATA or the shared copy)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--mode", choices=MODES, default="sentence",
                        help="one request per sentence, or per document (the client's documents mode)")  # fmt: skip
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--report", type=Path, default=None, help="build report.json to compare with")
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON here")


def _run(args: argparse.Namespace) -> int:
    sentences = load_split(data_source(args.data), args.split)[: args.limit]
    result = evaluate_served(args.url, sentences, args.model, args.concurrency, mode=args.mode)
    if args.report and args.report.is_file():
        report = BuildReport.load(args.report)
        variant = served_report_key(args.model, report)
        in_process = report.f1(variant)
        if args.mode == "document":
            if report.document_mode is None or variant not in report.document_mode.document:
                log.warning("%s has no document-mode F1 of %s (built without CONTEXT): compared with the sentence "
                            "mode", args.report, variant)  # fmt: skip
            else:
                in_process = report.document_mode.document[variant]
        result["in_process"] = {
            "variant": variant,
            "f1": in_process,
            "delta_points": round((result["f1"] - in_process) * 100, 2),
        }
    emit_json(result, args.output)
    return 0


main = Command("ner-eval-served", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
