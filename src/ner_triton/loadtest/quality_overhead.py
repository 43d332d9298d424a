"""``make quality-overhead``: throughput of ``ner`` with its quality metrics on vs off, in one run.

Two tritonservers serve the same model repository on free loopback ports, one with the quality metrics on (the
default) and one started with ``NER_QUALITY_METRICS=0``. Both stay up; the load goes to one at a time, in
alternating rounds (on, off, off, on, ...), so slow drifts of a shared machine hit both alike. Each phase is
``ner-bench``'s gRPC load (:func:`~ner_triton.bench.peers.run_grpc`: ``concurrency`` clients, ``texts_per_request``
texts per request, the same texts each time). The verdict is the ratio of the medians, on/off.

Writes ``benchmarks/quality/overhead.json`` and ``.md`` (every phase, the medians, the ratio, the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ner_triton.bench.peers import run_grpc
from ner_triton.bench.run import cpu_model
from ner_triton.cli import Command, emit_json
from ner_triton.errors import ConfigError
from ner_triton.loadtest.metrics import parse_quality, quality_summary, scrape_text
from ner_triton.loadtest.texts import TextPool
from ner_triton.schema import ENSEMBLE
from ner_triton.serving.server import ServerSettings, TritonServer
from ner_triton.settings import default_data
from ner_triton.signals import FLUSH_S

log = logging.getLogger(__name__)
SWITCH_ENV = "NER_QUALITY_METRICS"  # read by ner_triton.runtime.quality_metrics.enabled
OUTPUT = Path("benchmarks/quality")


@contextlib.contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    """``name`` set to ``value`` (unset for None) while a server starts: its python stubs inherit it."""
    old = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def compare(
    repository: Path,
    texts: list[str],
    rounds: int = 4,
    concurrency: int = 8,
    texts_per_request: int = 4,
    state: Path | None = None,
) -> dict[str, Any]:
    """Alternating phases on two servers (metrics on / off); sent/s of each phase, medians and their ratio."""
    if rounds < 1 or concurrency < 1 or texts_per_request < 1:
        raise ConfigError("rounds, concurrency and texts per request must be at least 1.")
    with tempfile.TemporaryDirectory(prefix="ner-quality-") as tmp, contextlib.ExitStack() as stack:
        root = state or Path(tmp)
        servers: dict[str, ServerSettings] = {}
        for name, switch in (("on", None), ("off", "0")):
            (root / name).mkdir(parents=True, exist_ok=True)
            settings = ServerSettings.on_free_ports(repository, root / name, model_control_mode="none")
            with _env(SWITCH_ENV, switch):
                stack.enter_context(TritonServer(settings))
            servers[name] = settings
        before = parse_quality(scrape_text(servers["on"].metrics_url))
        phases: list[dict[str, Any]] = []
        for r in range(rounds):
            order = ("on", "off") if r % 2 == 0 else ("off", "on")
            for name in order:
                run = run_grpc(servers[name].grpc_url, ENSEMBLE, ENSEMBLE, texts, concurrency, texts_per_request)
                phases.append({"round": r, "metrics": name, "sentences_per_s": run.throughput_sps,
                               "p50_ms": run.p50_ms, "p99_ms": run.p99_ms})  # fmt: skip
                log.info("round %d, metrics %-3s: %.1f sent/s (p50 %.1f ms)", r, name, run.throughput_sps, run.p50_ms)
        time.sleep(FLUSH_S + 0.5)  # the last phase's counts have reached the metrics port
        after_on = parse_quality(scrape_text(servers["on"].metrics_url))
        off_series = parse_quality(scrape_text(servers["off"].metrics_url))  # the quality series only
    median = {n: statistics.median(p["sentences_per_s"] for p in phases if p["metrics"] == n) for n in ("on", "off")}
    speed = {(p["round"], p["metrics"]): p["sentences_per_s"] for p in phases}
    per_round = [speed[(r, "on")] / speed[(r, "off")] for r in range(rounds)]
    return {
        "phases": phases,
        "median_sentences_per_s": median,
        "ratio_on_off": round(median["on"] / median["off"], 4),
        # each round's on/off ratio (neighbouring phases): their spread is this machine's noise at this load
        "ratios_per_round": [round(x, 4) for x in per_round],
        "ratio_geometric_mean": round(statistics.geometric_mean(per_round), 4),
        "load": {
            "rounds": rounds,
            "concurrency": concurrency,
            "texts_per_request": texts_per_request,
            "texts_per_phase": len(texts),
        },
        "quality_seen_by_the_on_server": quality_summary(before, after_on),
        "ner_series_on_the_off_server": len(off_series),
        "machine": {"cpu": cpu_model(), "cpus": os.cpu_count()},
    }


def write(result: dict[str, Any], output: Path) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    path = output / "overhead.json"
    emit_json(result, path)
    load, m = result["load"], result["median_sentences_per_s"]
    lines = [
        "# Quality metrics: throughput on vs off",
        "",
        f"{result['machine']['cpu']}, {result['machine']['cpus']} CPUs; {load['rounds']} rounds of "
        f"{load['texts_per_phase']} texts, {load['concurrency']} clients x {load['texts_per_request']} texts per "
        "request, alternating servers.",
        "",
        f"Median sent/s: on {m['on']:.1f}, off {m['off']:.1f}; ratio on/off **{result['ratio_on_off']:.3f}**; "
        f"per round {min(result['ratios_per_round']):.3f}-{max(result['ratios_per_round']):.3f} "
        f"(geometric mean {result['ratio_geometric_mean']:.3f}).",
        "",
        "| round | metrics | sent/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
        *[f"| {p['round']} | {p['metrics']} | {p['sentences_per_s']} | {p['p50_ms']} | {p['p99_ms']} |"
          for p in result["phases"]],
    ]  # fmt: skip
    path.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=Path(os.environ.get("MODEL_REPOSITORY", "model_repository")))
    parser.add_argument("--data", default=default_data(), help="texts: a file (one per line) or a data directory")
    parser.add_argument("--texts", type=int, default=400, help="texts per phase")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--texts-per-request", type=int, default=4)
    parser.add_argument("--output", type=Path, default=OUTPUT)


def _run(args: argparse.Namespace) -> int:
    pool = TextPool.from_source(args.data)
    texts = [pool.sentences[i % len(pool.sentences)] for i in range(args.texts)]
    result = compare(args.repository, texts, args.rounds, args.concurrency, args.texts_per_request)
    write(result, args.output)
    return 0


main = Command("ner-quality-overhead", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
