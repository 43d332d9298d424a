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
    machine = result["machine"]
    engine = peers.get("ort_engine")
    lines = [
        "# Benchmark",
        "",
        f"`{result['command']}` - {result['sentences']} test sentences of {result['data']} (seed {result['seed']}), "
        f"{machine['cpus']} CPUs ({machine.get('cpu_model', 'CPU model not recorded')}), "
        f"{result['seconds']:.0f} s. Served variant: `{result.get('served_variant', '?')}`. One request = one batch "
        "(in-process) or 1 / 8 sentences (gRPC). Latency at batch/concurrency 1.",
        "",
        machine_line(machine),
        "",
        "| peer | best sent/s | at | share of the engine limit | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in peers.items():
        at = (
            f"{p['best_concurrency']} clients x {p['best_batch_size']} texts"
            if PEERS[name].kind is PeerKind.TRITON_GRPC
            else f"batch {p['best_batch_size']}"
        )
        share = f"{p['throughput_sps'] / engine['throughput_sps']:.2f}" if engine else "-"
        lines.append(
            f"| {name} | {p['throughput_sps']:.1f} | {at} | {share} | {p['p50_ms']:.2f} | {p['p95_ms']:.2f} | "
            f"{p['p99_ms']:.2f} |"
        )
    header = (
        "| peer | batch (texts/request) | concurrency | sent/s | p50 ms | p99 ms | client CPU % | steal % "
        "| BERT avg batch | BERT queue ms/req | BERT compute ms/batch |"
    )
    lines += ["", "## Every run", "", header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, p in peers.items():
        for r in p["runs"]:
            t = r.get("triton") or {}
            steal = "-" if r.get("steal_pct") is None else r["steal_pct"]
            lines.append(
                f"| {name} | {r['batch_size']} | {r['concurrency']} | {r['throughput_sps']:.1f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['client_cpu_pct']:.0f} | {steal} | {t.get('bert_avg_batch_size', '-')} | "
                f"{t.get('bert_queue_ms_per_request', '-')} | {t.get('bert_compute_ms_per_batch', '-')} |"
            )
    lines += where_the_time_goes(peers)
    goals = {k: g for k, g in result["goals"].items() if isinstance(g, dict) and "goal" in g}
    if goals:
        reference = result["goals"].get("reference")
        lines += ["", "## Goals", "", f"Against `{reference}` (the in-process peer of the served file).", ""]
        lines += ["| measure | value | goal | from |", "|---|---|---|---|"]
        for name, g in goals.items():
            lines.append(f"| {name} | {g.get('ratio', g.get('value'))} | {g['goal']} | {g.get('detail', '')} |")
        per_peer = result["goals"].get("per_peer_vs_inprocess") or {}
        if per_peer:
            lines += ["", "Every gRPC peer's best throughput / the reference's: "
                      + ", ".join(f"{n} {r}" for n, r in per_peer.items())]  # fmt: skip
        vs_engine = result["goals"].get("per_peer_vs_engine") or {}
        if vs_engine:
            limit = result["goals"]["engine_limit"]
            lines += ["", f"Share of the engine limit (`ort_engine`, {limit['throughput_sps']} sent/s at batch "
                      f"{limit['batch_size']}, {limit.get('threads')} threads): "
                      + ", ".join(f"{n} {r}" for n, r in vs_engine.items())]  # fmt: skip
    lines += ["", f"![throughput]({THROUGHPUT_PNG}) ![latency]({LATENCY_PNG})", ""]
    return "\n".join(lines)


def machine_line(machine: dict[str, Any]) -> str:
    """CPU flags, steal time and the load generator's CPU: what decides how far this run's figures travel."""
    flags = ", ".join(machine.get("cpu_flags") or []) or "none of AVX2/AVX-512/VNNI/AMX"
    steal = machine.get("steal_pct")
    steal_text = "not known (no /proc/stat)" if steal is None else f"{steal}% of CPU time over the run"
    text = f"CPU flags: {flags}. Steal: {steal_text}."
    if machine.get("load_generator_wall_s"):
        text += (
            f" Load generator (this process, gRPC clients): {machine['load_generator_cpu_s']} CPU s over "
            f"{machine['load_generator_wall_s']} s of gRPC runs, on the server's cores."
        )
    if machine.get("engine_threads"):
        text += f" Engine peer threads: {machine['engine_threads']} (the served instances' threads in all)."
    return text


def where_the_time_goes(peers: dict[str, Any]) -> list[str]:
    """At one client and one text per request: each model's per-request time by phase (Triton's statistics),
    and what is left of the client's p50 for gRPC, (de)serialization and the hand-overs."""
    lines: list[str] = []
    for name, p in peers.items():
        run = next((r for r in p["runs"] if r["concurrency"] == 1 and r["batch_size"] == 1 and r.get("triton")), None)
        if run is None or "models" not in run["triton"]:
            continue
        if not lines:
            lines = [
                "",
                "## Where the time goes (1 client, 1 text per request; ms per request)",
                "",
                "| peer | model | queue | compute input | compute infer | compute output |",
                "|---|---|---|---|---|---|",
            ]
        inside = 0.0
        for model, ph in run["triton"]["models"].items():
            lines.append(f"| {name} | {model} | {ph['queue_ms']} | {ph['compute_input_ms']} | "
                         f"{ph['compute_infer_ms']} | {ph['compute_output_ms']} |")  # fmt: skip
            inside += ph["queue_ms"] + ph["compute_input_ms"] + ph["compute_infer_ms"] + ph["compute_output_ms"]
        lines.append(f"| {name} | client p50 {run['p50_ms']} ms; outside the models' phases | "
                     f"{round(run['p50_ms'] - inside, 2)} | | | |")  # fmt: skip
    return lines


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
            ax.plot(xs, [r["throughput_sps"] for r in p["runs"]], marker="o", color=f"C{k % 10}", label=name)
        else:
            label = f"{name} (in-process, best batch {p['best_batch_size']})"
            ax.axhline(p["throughput_sps"], linestyle="--", linewidth=1.2, color=f"C{k % 10}", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients (1 or 8 sentences per request: see the peer name)")
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
            ax.plot(xs, [r[q] for r in p["runs"]], style, marker="o", color=f"C{k % 10}", label=f"{name} {q[:3]}")
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
