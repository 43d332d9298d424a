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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ner_triton.bench.peers import (
    INPROCESS_OF,
    PEERS,
    HfPipeline,
    InProcessOrt,
    OrtEngine,
    PeerKind,
    Run,
    ServerMode,
    host_cpu_times,
    run_batches,
    run_engine,
    run_grpc,
    steal_pct,
)
from ner_triton.bench.report import write_outputs
from ner_triton.bench.side_by_side import median_round, one_at_a_time, saturation
from ner_triton.cli import Command
from ner_triton.cpus import cpu_flags, cpu_model
from ner_triton.data import load_split
from ner_triton.errors import ConfigError
from ner_triton.repository.install import install_artifacts, served_settings
from ner_triton.repository.model_configs import RepositorySettings, stats_model_of
from ner_triton.repository.render import write_configs
from ner_triton.schema import ENSEMBLE, MODEL_DIR, ONNX_DIR, POSTPROCESS, PREPROCESS
from ner_triton.serving.server import ServerSettings, TritonServer
from ner_triton.settings import data_source, default_data
from ner_triton.variants import FP32, Variant

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchSettings:
    artifacts: Path = Path("artifacts")
    data: str = field(default_factory=default_data)
    sentences: int = 800
    seed: int = 13
    batch_sizes: tuple[int, ...] = (1, 8, 32)
    concurrency: tuple[int, ...] = (1, 4, 16, 64)
    # Requests of several texts need fewer clients to fill the server: their levels stop at this many requests
    # in flight per text of a request (64 clients x 8 texts would be 512 texts in flight).
    max_texts_in_flight: int = 128
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


def _single(runs: list[Run]) -> Run:
    """The run at the smallest concurrency and batch: one text, one request at a time."""
    return min(runs, key=lambda r: (r.concurrency, r.batch_size))


def summarize(runs: list[Run]) -> dict[str, Any]:
    """Best throughput over the runs; latency at the smallest batch and concurrency (one request at a time)."""
    best = max(runs, key=lambda r: r.throughput_sps)
    single = _single(runs)
    return {
        "throughput_sps": best.throughput_sps,
        "best_batch_size": best.batch_size,
        "best_concurrency": best.concurrency,
        "p50_ms": single.p50_ms,
        "p95_ms": single.p95_ms,
        "p99_ms": single.p99_ms,
        "runs": [r.as_dict() for r in runs],
    }


def goals(peers: dict[str, dict[str, Any]], served: Variant, side: dict[str, Any] | None = None) -> dict[str, Any]:
    """The goals as measured ratios, against the in-process peer of the served file (None: a peer not run).

    ``served_best``: the best throughput of any gRPC peer serving the chosen variant (1 or 8 texts per request).
    The rows of ``ner`` at one client and at saturation read ``side`` (:mod:`ner_triton.bench.side_by_side`: the
    served side and its reference measured alternately), not the peers' own runs minutes apart."""
    ref_name = INPROCESS_OF[served.key]
    grpc = {n: p for n, p in peers.items() if PEERS[n].kind is PeerKind.TRITON_GRPC}
    out: dict[str, Any] = {"reference": ref_name, "served_variant": served.key}
    ref, hf = peers.get(ref_name), peers.get("hf_pipeline_fp32")
    if grpc:
        best_name = max(grpc, key=lambda n: grpc[n]["throughput_sps"])
        best = grpc[best_name]["throughput_sps"]
        out["served_best"] = {"peer": best_name, "throughput_sps": best}
        if ref:
            out["served_vs_inprocess_throughput"] = {"ratio": round(best / ref["throughput_sps"], 3), "goal": ">= 0.9"}
            out["per_peer_vs_inprocess"] = {n: round(p["throughput_sps"] / ref["throughput_sps"], 3)
                                            for n, p in grpc.items()}  # fmt: skip
        if hf:
            out["served_vs_hf_pipeline_throughput"] = {"ratio": round(best / hf["throughput_sps"], 2), "goal": ">= 3"}
    one = (side or {}).get("one_at_a_time")
    if one:
        back_to_back = f"; in its own run, back to back: {ref['p50_ms']} ms" if ref else ""
        out["ner_c1_p50_minus_inprocess_b1_p50_ms"] = {
            "value": round(one["served_p50_ms"] - one["reference_p50_ms"], 2),
            "goal": "<= 1.5",
            "detail": f"side by side, {one['texts']} texts in alternating blocks: ner p50 {one['served_p50_ms']} ms "
            f"vs in-process batch-1 p50 {one['reference_p50_ms']} ms{back_to_back}",
        }
        # the in-process peer's own spread, for scale: short and long sentences alone already differ that much
        own = round(one["reference_p99_ms"] / one["reference_p50_ms"], 2)
        out["ner_c1_p99_over_p50"] = {
            "ratio": round(one["served_p99_ms"] / one["served_p50_ms"], 2),
            "goal": "<= 2",
            "detail": f"ner at one client: p99 {one['served_p99_ms']} ms / p50 {one['served_p50_ms']} ms; "
            f"in-process batch-1 p99 / p50 on the same texts: {own}",
        }
        out["ner_c1_same_text_p99_slowdown"] = {
            "ratio": one["ratio_p99"],
            "goal": "<= 2",
            "detail": f"each text's time served / in process, side by side: p50 {one['ratio_p50']}, p99 "
            f"{one['ratio_p99']}, max {one['ratio_max']} (slowest request {one['served_max_ms']} ms)",
        }
    equal = peers.get("triton_equal_shapes_grpc")
    if equal:
        top = max(equal["runs"], key=lambda r: r["concurrency"])
        per_execution = (top.get("triton") or {}).get("bert_avg_batch_size")
        out["equal_shapes_requests_per_execution"] = {
            "value": per_execution,
            "goal": ">= 3",
            "detail": f"BERT step's requests per execution at {top['concurrency']} clients (equal-shape layout)",
        }
    engine = peers.get("ort_engine")
    if engine and grpc:
        limit = engine["throughput_sps"]
        out["engine_limit"] = {"peer": "ort_engine", "throughput_sps": limit,
                               "batch_size": engine["best_batch_size"], "threads": engine.get("threads")}  # fmt: skip
        out["per_peer_vs_engine"] = {n: round(p["throughput_sps"] / limit, 3) for n, p in grpc.items()}
    rounds = (side or {}).get("saturation")
    if rounds:
        mid = median_round(rounds)
        out["ner_1text_saturation_vs_engine"] = {
            "ratio": mid["ratio"],
            "goal": ">= 0.8",
            "detail": f"side by side, median of {len(rounds)} rounds ("
            + ", ".join(str(r["ratio"]) for r in rounds)
            + f"): ner {mid['served_sps']} sent/s (1 text per request) / engine {mid['engine_sps']} sent/s; the load "
            f"generator took {round(100 * mid['load_generator_cpu_share'], 1)}% of the CPUs from the server",
        }
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "onnxruntime", "tritonclient", "nvidia-pytriton", "locust"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


def _repository(settings: BenchSettings, root: Path, mode: ServerMode) -> tuple[Path, RepositorySettings]:
    """A temporary repository of the build (its served variant first), in ``mode``."""
    repo = root / f"repository-{mode.value}"
    repo_settings = replace(served_settings(settings.artifacts), equal_shapes=mode is ServerMode.EQUAL_SHAPES)
    if mode is ServerMode.ONE_INSTANCE:
        repo_settings = replace(repo_settings, batching=replace(repo_settings.batching, instances=1, threads=2))
    write_configs(repo_settings, repo)
    install_artifacts(repo_settings, settings.artifacts, repo)
    return repo, repo_settings


def triton_peers(
    settings: BenchSettings,
    texts: list[str],
    wanted: list[str],
    served: Variant,
    side: Callable[[ServerSettings], None] | None = None,
) -> dict[str, list[Run]]:
    """Every wanted gRPC peer, one server per repository mode (the others stopped meanwhile); ``side`` runs on the
    served layout's server after its peers (the side-by-side goal measurements)."""
    out: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for mode in ServerMode:
            names = [n for n in wanted if PEERS[n].mode is mode]
            if not names:
                continue
            repo, repo_settings = _repository(settings, Path(tmp), mode)
            server = ServerSettings.on_free_ports(repo, Path(tmp) / mode.value)
            with TritonServer(server):
                for name in names:
                    peer = PEERS[name]
                    model = peer.model(served)
                    batched = stats_model_of(model, repo_settings)
                    path = [ENSEMBLE] if peer.fused else [PREPROCESS, batched, POSTPROCESS]
                    cap = max(settings.max_texts_in_flight, peer.texts_per_request)
                    levels = [c for c in settings.concurrency if c * peer.texts_per_request <= cap]
                    out[name] = []
                    for c in tqdm(levels, desc=name, unit="level"):
                        run = run_grpc(server.grpc_url, model, batched, texts, c, peer.texts_per_request, path)
                        log.info("%s c=%d: %.1f sent/s p50 %.2f ms batch %s", name, c, run.throughput_sps,
                                 run.p50_ms, (run.triton or {}).get("bert_avg_batch_size"))  # fmt: skip
                        out[name].append(run)
                if side is not None and mode is ServerMode.RAGGED:
                    side(server)
    return out


def bench(settings: BenchSettings, command: str = "make bench") -> Path:
    """Run every peer; write latest.json / latest.md / plots into ``settings.output``; returns the JSON path."""
    onnx_dir = settings.artifacts / ONNX_DIR
    for path in (settings.artifacts / MODEL_DIR, onnx_dir / FP32.onnx_file):
        if not path.exists():
            raise ConfigError(f"{path} is missing: run `make build` (or set ARTIFACTS to a build) first.")
    repo_settings = served_settings(settings.artifacts)  # refused if the build failed its gate
    served = repo_settings.served  # the build's choice
    texts = sample_texts(settings)
    # the engine peer gets the threads the served ner's instances have in all (the bulk lane's one left out)
    engine_threads = (repo_settings.ner_instances or repo_settings.batching.instances) * repo_settings.batching.threads
    host0, t0 = host_cpu_times(), time.perf_counter()
    runs: dict[str, list[Run]] = {}
    inprocess: dict[str, InProcessOrt] = {}
    engine: OrtEngine | None = None
    for name in settings.peers:
        peer = PEERS[name]
        if peer.kind is PeerKind.HF_PIPELINE:
            runs[name] = []
            for b in settings.batch_sizes:
                pipe = HfPipeline(settings.artifacts, settings.threads, b)
                runs[name].append(run_batches(pipe, texts, b))
                log.info("%s b=%d: %.1f sent/s", name, b, runs[name][-1].throughput_sps)
        elif peer.kind is PeerKind.ORT_INPROCESS and peer.variant is not None:
            if not (onnx_dir / peer.variant.onnx_file).is_file():
                log.warning("%s skipped: %s is not in this build", name, peer.variant.onnx_file)
                continue
            ort = inprocess[name] = InProcessOrt(
                settings.artifacts, onnx_dir / peer.variant.onnx_file, settings.threads
            )
            runs[name] = [run_batches(ort, texts, b) for b in settings.batch_sizes]
            for r in runs[name]:
                log.info("%s b=%d: %.1f sent/s p50 %.2f ms", name, r.batch_size, r.throughput_sps, r.p50_ms)
        elif peer.kind is PeerKind.ORT_ENGINE:
            engine = OrtEngine(settings.artifacts, onnx_dir / served.onnx_file, engine_threads)
            runs[name] = [run_engine(engine, texts, b) for b in settings.batch_sizes]
            for r in runs[name]:
                log.info("%s b=%d: %.1f sent/s p50 %.2f ms", name, r.batch_size, r.throughput_sps, r.p50_ms)
    wanted = [n for n in settings.peers if PEERS[n].kind is PeerKind.TRITON_GRPC]
    side: dict[str, Any] = {}
    reference = inprocess.get(INPROCESS_OF[served.key])

    def side_by_side(server: ServerSettings) -> None:
        """``ner``'s goal measurements, alternating with their references (bench.side_by_side)."""
        if reference is not None:
            side["one_at_a_time"] = one_at_a_time(server.grpc_url, reference, texts).summary()
        if engine is not None:  # set together with runs["ort_engine"]
            best = summarize(runs["ort_engine"])["best_batch_size"]
            clients = max(c for c in (1, *settings.concurrency) if c <= settings.max_texts_in_flight)
            side["saturation"] = saturation(server.grpc_url, engine, texts, clients, best)

    if wanted:
        runs.update(
            triton_peers(settings, texts, wanted, served, side_by_side if "triton_ner_grpc" in wanted else None)
        )
    peers = {name: summarize(r) for name, r in runs.items()}
    if "ort_engine" in peers:
        peers["ort_engine"]["threads"] = engine_threads
    grpc_runs = [r for n, rs in runs.items() if PEERS[n].kind is PeerKind.TRITON_GRPC for r in rs]
    result = {
        "command": command,
        "seed": settings.seed,
        "sentences": len(texts),
        "data": f"{settings.data} (test split, seeded sample)",
        "artifacts": str(settings.artifacts),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "cpu_flags": cpu_flags(),
            "threads": settings.threads,
            "engine_threads": engine_threads,
            "platform": platform.platform(),
            "steal_pct": steal_pct(host0, host_cpu_times()),
            # the gRPC clients run in this process: what the load generator took from the shared cores
            "load_generator_cpu_s": round(sum(r.client_cpu_s for r in grpc_runs), 3),
            "load_generator_wall_s": round(sum(r.seconds for r in grpc_runs), 1),
        },
        "versions": _versions(),
        "seconds": round(time.perf_counter() - t0, 1),
        "served_variant": served.key,
        "peers": peers,
        "side_by_side": side,
        "goals": goals(peers, served, side),
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
