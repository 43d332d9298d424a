"""Accuracy and batching **through the running server**: CoNLL-2003 text in, spans out, scored.

Each gold sentence's text (tokens joined by spaces) goes to the ensemble from ``concurrency``
client threads, one sentence per request (online traffic). The returned character spans become
IOB2 tags of the gold tokens and are scored with the same seqeval code as the build, so the
figure is directly comparable with the in-process F1 of ``artifacts/report.json``. Triton's
statistics before and after give the BERT step's average executed batch size.

    ner-eval-served --split test --concurrency 16          # or: make eval-served
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
from ner_triton.data import Sentence, load_split
from ner_triton.decoding import spans_to_token_tags
from ner_triton.pipeline.evaluate import score_tags
from ner_triton.record import BuildReport
from ner_triton.repository.model_configs import bert_step_of, stats_model_of
from ner_triton.schema import ENSEMBLE
from ner_triton.settings import data_source

log = logging.getLogger(__name__)


PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


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
) -> dict[str, Any]:
    """Entity scores of the served ensemble on ``sentences`` plus throughput and batching figures."""
    local = threading.local()

    def client() -> NerClient:
        if not hasattr(local, "client"):
            local.client = NerClient(url, model, timeout_s)
        return local.client  # type: ignore[no-any-return]

    latencies: list[float] = []

    def one(sentence: Sentence) -> list[str]:
        t = time.perf_counter()
        (entities,) = client().extract([sentence.text])
        latencies.append(time.perf_counter() - t)
        starts = sentence.token_starts()
        ends = [s + len(t) for s, t in zip(starts, sentence.tokens, strict=True)]
        return spans_to_token_tags(entities, starts, ends)

    bert = stats_model_of(model)  # the BERT step (or the one-step ``ner`` itself): its batches
    with NerClient(url, model, timeout_s) as admin:
        before = model_counts(admin, bert)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            pred = list(tqdm(pool.map(one, sentences), total=len(sentences), desc=f"served {model}", unit="sent"))
        seconds = time.perf_counter() - t0
        batching = phase_ms(before, model_counts(admin, bert))
    result = score_tags([s.tags for s in sentences], pred)
    ms = np.array(latencies) * 1000.0
    return {
        "model": model,
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
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--report", type=Path, default=None, help="build report.json to compare with")
    parser.add_argument("--output", type=Path, default=None, help="write the result as JSON here")


def _run(args: argparse.Namespace) -> int:
    sentences = load_split(data_source(args.data), args.split)[: args.limit]
    result = evaluate_served(args.url, sentences, args.model, args.concurrency)
    if args.report and args.report.is_file():
        report = BuildReport.load(args.report)
        variant = served_report_key(args.model, report)
        in_process = report.f1(variant)
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
