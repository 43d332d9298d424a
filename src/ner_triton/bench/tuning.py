"""Choose the dynamic-batching settings of ``ner`` (the one-step model of the local server; the same settings
apply to the ensembles' BERT steps) by measurement, on the real server.

For each candidate :class:`~ner_triton.repository.model_configs.BatchingSettings` (``1x2``: one
instance with two ONNX Runtime threads; ``2x1``: two instances with one thread each) a repository is
written to a temporary directory with the build's model, a server is started on free loopback
ports, and CoNLL-2003 test sentences are sent one per request at concurrency 1 and at a high
concurrency. The table gives throughput, latency percentiles and the executed batch size, side by
side in one run (absolute times drift on shared machines; compare rows, not runs).

    ner-tune-batching --artifacts artifacts     # or: make tune-batching
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ner_triton.bench.served_eval import evaluate_served
from ner_triton.cli import Command, emit_json
from ner_triton.data import Sentence, load_split
from ner_triton.repository.install import install_artifacts, served_settings
from ner_triton.repository.model_configs import BatchingSettings
from ner_triton.repository.render import write_configs
from ner_triton.serving.server import ServerSettings, TritonServer
from ner_triton.settings import data_source

log = logging.getLogger(__name__)


def _one(delay_us: int, preferred: tuple[int, ...] = (8, 16, 32)) -> BatchingSettings:
    return BatchingSettings(preferred_batch_size=preferred, max_queue_delay_us=delay_us, instances=1, threads=2)


def _two(delay_us: int, preferred: tuple[int, ...] = (8, 16, 32)) -> BatchingSettings:
    return BatchingSettings(preferred_batch_size=preferred, max_queue_delay_us=delay_us, instances=2, threads=1)


CANDIDATES: dict[str, BatchingSettings] = {
    "1x2_no_delay": _one(0, ()),
    "1x2_delay_1ms": _one(1000),
    "1x2_delay_2ms": _one(2000),
    "1x2_delay_5ms": _one(5000),
    "2x1_no_delay": _two(0, ()),
    "2x1_delay_1ms": _two(1000),
    "2x1_delay_2ms": _two(2000),
    "2x2_no_delay_no_spin": BatchingSettings(instances=2, threads=2, spinning=False),
    "2x1_no_delay_no_spin": BatchingSettings(instances=2, threads=1, spinning=False),
}


def measure(
    artifacts: Path,
    batching: BatchingSettings,
    sentences: Sequence[Sentence],
    concurrency: Sequence[int],
    workdir: Path,
) -> dict[str, Any]:
    settings = replace(served_settings(artifacts), batching=batching)
    repo = workdir / "repository"
    write_configs(settings, repo)
    install_artifacts(settings, artifacts, repo)
    server = ServerSettings.on_free_ports(repo, workdir)
    out: dict[str, Any] = {"batching": asdict(batching)}
    with TritonServer(server):
        for c in concurrency:
            part = sentences[: max(300, 60 * c)]
            r = evaluate_served(server.grpc_url, part, concurrency=c)
            out[f"c{c}"] = {
                k: r[k] for k in ("sentences_per_s", "latency_ms", "bert_avg_batch_size", "f1", "sentences")
            }
    return out


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--data", default=None)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--only", nargs="*", choices=sorted(CANDIDATES), default=None)
    parser.add_argument("--output", type=Path, default=None)


def _run(args: argparse.Namespace) -> int:
    sentences = load_split(data_source(args.data), "test")
    results = {}
    for name in args.only or CANDIDATES:
        with tempfile.TemporaryDirectory(prefix=f"tune-{name}-") as tmp:
            results[name] = measure(args.artifacts, CANDIDATES[name], sentences, args.concurrency, Path(tmp))
        log.info("%s: %s", name, json.dumps({k: v for k, v in results[name].items() if k != "batching"}))
    emit_json(results, args.output)
    return 0


main = Command("ner-tune-batching", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
