"""Benchmark outputs: ``latest.json``, ``latest.md`` (tables) and PNG plots, written side by side."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ner_triton.bench.peers import PEERS, PeerKind

log = logging.getLogger(__name__)

JSON_NAME = "latest.json"
THROUGHPUT_PNG = "throughput.png"
LATENCY_PNG = "latency.png"


def render_markdown(result: dict[str, Any]) -> str:
    peers = result["peers"]
    lines = [
        "# Benchmark",
        "",
        f"`{result['command']}` - {result['sentences']} test sentences of {result['data']} (seed {result['seed']}), "
        f"{result['machine']['cpus']} CPUs, {result['seconds']:.0f} s. One request = one batch (in-process) or one "
        "sentence (gRPC). Latency at batch/concurrency 1.",
        "",
        "| peer | best sent/s | at | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in peers.items():
        at = (
            f"concurrency {p['best_concurrency']}"
            if PEERS[name].kind is PeerKind.TRITON_GRPC
            else f"batch {p['best_batch_size']}"
        )
        lines.append(
            f"| {name} | {p['throughput_sps']:.1f} | {at} | {p['p50_ms']:.2f} | {p['p95_ms']:.2f} | {p['p99_ms']:.2f} |"
        )
    header = (
        "| peer | batch | concurrency | sent/s | p50 ms | p99 ms | client CPU % "
        "| BERT avg batch | BERT queue ms/req | BERT compute ms/batch |"
    )
    lines += ["", "## Every run", "", header, "|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in peers.items():
        for r in p["runs"]:
            t = r.get("triton") or {}
            lines.append(
                f"| {name} | {r['batch_size']} | {r['concurrency']} | {r['throughput_sps']:.1f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['client_cpu_pct']:.0f} | {t.get('bert_avg_batch_size', '-')} | "
                f"{t.get('bert_queue_ms_per_request', '-')} | {t.get('bert_compute_ms_per_batch', '-')} |"
            )
    if result["goals"]:
        lines += ["", "## Goals", "", "| measure | value | goal |", "|---|---|---|"]
        for name, g in result["goals"].items():
            lines.append(f"| {name} | {g.get('ratio', g.get('value'))} | {g['goal']} |")
    lines += ["", f"![throughput]({THROUGHPUT_PNG}) ![latency]({LATENCY_PNG})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], output: Path) -> list[Path]:
    """Throughput and latency percentiles vs concurrency (gRPC) with in-process peers as reference lines."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (the plots extra): no plots")
        return []
    peers = result["peers"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (name, p) in enumerate(peers.items()):
        if PEERS[name].kind is PeerKind.TRITON_GRPC:
            xs = [r["concurrency"] for r in p["runs"]]
            ax.plot(xs, [r["throughput_sps"] for r in p["runs"]], marker="o", color=f"C{k}", label=name)
        else:
            label = f"{name} (in-process, best batch {p['best_batch_size']})"
            ax.axhline(p["throughput_sps"], linestyle="--", linewidth=1.2, color=f"C{k}", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients (one sentence per request)")
    ax.set_ylabel("sentences / s")
    ax.set_title("Throughput")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [output / THROUGHPUT_PNG]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (name, p) in enumerate(peers.items()):
        if PEERS[name].kind is not PeerKind.TRITON_GRPC:
            continue
        xs = [r["concurrency"] for r in p["runs"]]
        for q, style in (("p50_ms", "-"), ("p95_ms", "--"), ("p99_ms", ":")):
            ax.plot(xs, [r[q] for r in p["runs"]], style, marker="o", color=f"C{k}", label=f"{name} {q[:3]}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency per request (ms)")
    ax.set_title("Latency percentiles")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(output / LATENCY_PNG)
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths


def write_outputs(result: dict[str, Any], output: Path) -> Path:
    output.mkdir(parents=True, exist_ok=True)
    path = output / JSON_NAME
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(render_markdown(result), encoding="utf-8")
    plot(result, output)
    log.info("benchmark written to %s", output)
    return path
