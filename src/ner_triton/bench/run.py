"""``make bench``: every peer on the same sentences and machine, in one run, reported as ratios.

Writes ``benchmarks/results/latest.json`` (``peers.<name>.throughput_sps``, ``.p50_ms``, ``.p99_ms``, every
run, ratios against the goals, versions, machine, command, seed), ``latest.md`` and two PNG plots.
The server runs on a temporary copy of the repository built from ``ARTIFACTS`` on free loopback ports.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import random
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ner_triton.bench.peers import PEERS, HfPipeline, InProcessOrt, PeerKind, Run, run_batches, run_grpc
from ner_triton.bench.report import write_outputs
from ner_triton.cli import Command
from ner_triton.data import load_split
from ner_triton.errors import ConfigError
from ner_triton.repository.install import install_artifacts, settings_for_model
from ner_triton.repository.render import write_configs
from ner_triton.schema import MODEL_DIR, ONNX_DIR
from ner_triton.serving.server import ServerSettings, TritonServer
from ner_triton.settings import data_source, default_data
from ner_triton.variants import FP32, INT8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchSettings:
    artifacts: Path = Path("artifacts")
    data: str = field(default_factory=default_data)
    sentences: int = 800
    seed: int = 13
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    output: Path = Path("benchmarks/results")
    peers: tuple[str, ...] = tuple(PEERS)  # names in bench.peers.PEERS

    def __post_init__(self) -> None:
        unknown = [p for p in self.peers if p not in PEERS]
        if unknown:
            raise ConfigError(f"unknown bench peer(s) {unknown}: use some of {list(PEERS)}.")


def sample_texts(settings: BenchSettings) -> list[str]:
    """``sentences`` CoNLL-2003 test sentences (seeded sample, as plain text)."""
    test = [s.text for s in load_split(data_source(settings.data), "test")]
    random.Random(settings.seed).shuffle(test)
    return test[: settings.sentences]


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Best throughput over the runs; latency at batch/concurrency 1."""
    best = max(runs, key=lambda r: r.throughput_sps)
    single = next(r for r in runs if r.batch_size == 1 and r.concurrency == 1)
    return {
        "throughput_sps": best.throughput_sps,
        "best_batch_size": best.batch_size,
        "best_concurrency": best.concurrency,
        "p50_ms": single.p50_ms,
        "p95_ms": single.p95_ms,
        "p99_ms": single.p99_ms,
        "runs": [r.as_dict() for r in runs],
    }


def goals(peers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals as measured ratios (None when a peer was not run)."""

    def tp(name: str) -> float | None:
        return peers[name]["throughput_sps"] if name in peers else None

    out: dict[str, Any] = {}
    t_int8, o_int8, hf = tp("triton_int8_grpc"), tp("ort_int8_inprocess"), tp("hf_pipeline_fp32")
    if t_int8 and o_int8:
        out["triton_int8_vs_ort_int8_throughput"] = {"ratio": round(t_int8 / o_int8, 3), "goal": ">= 0.85"}
    if t_int8 and hf:
        out["triton_int8_vs_hf_pipeline_throughput"] = {"ratio": round(t_int8 / hf, 2), "goal": ">= 3"}
    if "triton_int8_grpc" in peers and "ort_int8_inprocess" in peers:
        diff = peers["triton_int8_grpc"]["p50_ms"] - peers["ort_int8_inprocess"]["p50_ms"]
        out["triton_int8_c1_p50_minus_ort_int8_b1_p50_ms"] = {"value": round(diff, 2), "goal": "<= 2"}
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "onnxruntime", "tritonclient", "nvidia-pytriton", "locust"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def triton_peers(settings: BenchSettings, texts: list[str], wanted: list[str]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        repo = Path(tmp) / "repository"
        repo_settings = replace(settings_for_model(settings.artifacts / MODEL_DIR), variants=(INT8, FP32))
        write_configs(repo_settings, repo)
        install_artifacts(repo_settings, settings.artifacts, repo)
        server = ServerSettings.on_free_ports(repo, Path(tmp))
        with TritonServer(server):
            for name in wanted:
                variant = PEERS[name].variant
                model = variant.ensemble_name(repo_settings.variants[0])
                out[name] = []
                for c in tqdm(settings.concurrency, desc=name, unit="level"):
                    run = run_grpc(server.grpc_url, model, variant.triton_name, texts, c)
                    log.info("%s c=%d: %.1f sent/s p50 %.2f ms %s", name, c, run.throughput_sps, run.p50_ms, run.triton)
                    out[name].append(run)
    return out


def bench(settings: BenchSettings, command: str = "make bench") -> Path:
    """Run every peer; write latest.json / latest.md / plots into ``settings.output``; returns the JSON path."""
    onnx_dir = settings.artifacts / ONNX_DIR
    for path in (settings.artifacts / MODEL_DIR, onnx_dir / FP32.onnx_file, onnx_dir / INT8.onnx_file):
        if not path.exists():
            raise ConfigError(f"{path} is missing: run `make build` (or set ARTIFACTS to a build) first.")
    texts = sample_texts(settings)
    t0 = time.perf_counter()
    runs: dict[str, list[Run]] = {}
    for name in settings.peers:
        peer = PEERS[name]
        if peer.kind is PeerKind.HF_PIPELINE:
            runs[name] = []
            for b in settings.batch_sizes:
                pipe = HfPipeline(settings.artifacts, settings.threads, b)
                runs[name].append(run_batches(pipe, texts, b))
                log.info("%s b=%d: %.1f sent/s", name, b, runs[name][-1].throughput_sps)
        elif peer.kind is PeerKind.ORT_INPROCESS:
            ort = InProcessOrt(settings.artifacts, onnx_dir / peer.variant.onnx_file, settings.threads)
            runs[name] = [run_batches(ort, texts, b) for b in settings.batch_sizes]
            for r in runs[name]:
                log.info("%s b=%d: %.1f sent/s p50 %.2f ms", name, r.batch_size, r.throughput_sps, r.p50_ms)
    wanted = [n for n in settings.peers if PEERS[n].kind is PeerKind.TRITON_GRPC]
    if wanted:
        runs.update(triton_peers(settings, texts, wanted))
    peers = {name: summarize(r) for name, r in runs.items()}
    result = {
        "command": command,
        "seed": settings.seed,
        "sentences": len(texts),
        "data": f"{settings.data} (test split, seeded sample)",
        "artifacts": str(settings.artifacts),
        "machine": {"cpus": os.cpu_count(), "threads": settings.threads, "platform": platform.platform()},
        "versions": _versions(),
        "seconds": round(time.perf_counter() - t0, 1),
        "peers": peers,
        "goals": goals(peers),
    }
    return write_outputs(result, settings.output)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", type=Path, default=Path(os.environ.get("ARTIFACTS") or "artifacts"))
    parser.add_argument("--data", default=None, help="CoNLL-2003 directory (default: $DATA or the shared copy)")
    parser.add_argument("--sentences", type=int, default=BenchSettings.sentences)
    parser.add_argument("--peers", nargs="*", default=None, choices=list(PEERS))
    parser.add_argument("--concurrency", type=int, nargs="*", default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="*", default=None)
    parser.add_argument("--output", type=Path, default=BenchSettings.output)


def _run(args: argparse.Namespace) -> int:
    settings = BenchSettings(artifacts=args.artifacts, sentences=args.sentences, output=args.output)
    if args.data or os.environ.get("DATA"):
        settings = replace(settings, data=args.data or os.environ["DATA"])
    if args.peers:
        settings = replace(settings, peers=tuple(args.peers))
    if args.concurrency:
        settings = replace(settings, concurrency=tuple(args.concurrency))
    if args.batch_sizes:
        settings = replace(settings, batch_sizes=tuple(args.batch_sizes))
    path = bench(settings, command=" ".join(["ner-bench", *args.argv]))
    print(path.with_suffix(".md").read_text(encoding="utf-8"))
    return 0


main = Command("ner-bench", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
