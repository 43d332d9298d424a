"""Local replicas measured: throughput and p99 through the nginx proxy for each replica count, and the
capacity planner's prediction checked against an open-loop run (``ner-replicas``).

    ner-replicas run --replicas 2              # N tritonservers behind nginx until Ctrl-C (make replicas)
    ner-replicas measure --replicas 1,2        # -> benchmarks/replicas/report.{json,md} (make replicas-measure)
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ner_triton.bench.capacity import Curve, check, check_table, open_loop
from ner_triton.bench.peers import run_grpc
from ner_triton.bench.run import BenchSettings, sample_texts
from ner_triton.cli import Command
from ner_triton.repository.model_configs import bert_step_of
from ner_triton.schema import ENSEMBLE
from ner_triton.serving.replicas import ProxySettings, ReplicaSet
from ner_triton.serving.server import STATE_DIR, free_ports
from ner_triton.settings import default_data

log = logging.getLogger(__name__)


def measure(
    repository: Path, counts: list[int], texts: list[str], concurrency: list[int], open_rate_share: float
) -> dict[str, Any]:
    """Per replica count: the closed-loop curve (throughput, p99 per concurrency) through the proxy, then
    an open-loop Poisson run at ``open_rate_share`` x the single replica's peak, compared with the
    capacity planner's prediction from the N=1 curve."""
    out: dict[str, Any] = {"counts": {}, "sentences": len(texts), "concurrency": concurrency}
    base_curve: Curve | None = None
    bert = bert_step_of(ENSEMBLE)
    for n in counts:
        grpc_port, http_port = free_ports(2)
        proxy = ProxySettings(grpc_port=grpc_port, http_port=http_port, state_dir=STATE_DIR / "measure" / "proxy")
        with ReplicaSet(repository, n, proxy, STATE_DIR / "measure") as rs:
            runs = [run_grpc(rs.url, ENSEMBLE, bert.triton_name, texts, c).as_dict() for c in concurrency]
            curve = Curve.from_runs(runs)
            base_curve = base_curve or curve
            rate = round(open_rate_share * base_curve.peak_rps, 1)
            measured = open_loop(rs.url, texts, rate, seconds=20.0)
        out["counts"][str(n)] = {
            "closed_loop": runs,
            "peak_rps": curve.peak_rps,
            "open_loop": {"rate_rps": rate, **measured},
        }
        log.info("N=%d: peak %.1f sent/s; open loop %.1f/s: p99 %s ms", n, curve.peak_rps, rate, measured["p99_ms"])
    return out


def report_markdown(result: dict[str, Any]) -> str:
    """The measurement as tables: closed-loop curve per replica count, then the planner's check."""
    lines = [
        "# Local replicas behind nginx (`ner-replicas measure`)",
        "",
        f"{result['sentences']} CoNLL-2003 test sentences, one per request, through the proxy.",
        "",
        "| replicas | clients | sent/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for n, entry in result["counts"].items():
        for r in entry["closed_loop"]:
            lines.append(f"| {n} | {r['concurrency']} | {r['throughput_sps']} | {r['p50_ms']} | {r['p99_ms']} |")
    if "1" in result["counts"]:
        lines += ["", "Open loop (Poisson arrivals) vs the capacity planner's prediction from the 1-replica curve:", ""]
        lines.append(check_table(check(result)))
    return "\n".join(lines) + "\n"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="start N replicas and the proxy; Ctrl-C stops them")
    run.add_argument("--replicas", type=int, default=2)
    run.add_argument("--grpc-port", type=int, default=8001)
    run.add_argument("--http-port", type=int, default=8000)
    meas = sub.add_parser("measure", help="throughput and p99 through the proxy for each replica count")
    meas.add_argument("--replicas", default="1,2", help="replica counts, e.g. 1,2")
    meas.add_argument("--concurrency", default="1,4,16,64")
    meas.add_argument("--sentences", type=int, default=800)
    meas.add_argument("--open-rate-share", type=float, default=0.6, help="open-loop rate / one replica's peak")
    meas.add_argument("--data", default=None)
    meas.add_argument("--output", type=Path, default=Path("benchmarks/replicas/report.json"))
    for p in (run, meas):
        p.add_argument("--repository", type=Path, default=Path("model_repository"))
        p.add_argument("--nginx", default="nginx")


def _run(args: argparse.Namespace) -> int:
    if args.action == "run":
        proxy = ProxySettings(grpc_port=args.grpc_port, http_port=args.http_port, nginx=args.nginx)
        rs = ReplicaSet(args.repository, args.replicas, proxy)

        def announce() -> None:
            for i, s in enumerate(rs.settings):
                print(f"replica {i}: grpc {s.grpc_url}, metrics {s.metrics_url}")
            print(f"proxy: grpc {rs.url}, http {proxy.host}:{proxy.http_port} - Ctrl-C stops everything", flush=True)

        rs.run_until_signal(announce)
        return 0
    bench = BenchSettings(sentences=args.sentences, data=args.data or default_data())
    counts = [int(n) for n in args.replicas.split(",")]
    concurrency = [int(c) for c in args.concurrency.split(",")]
    result = measure(args.repository, counts, sample_texts(bench), concurrency, args.open_rate_share)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    args.output.with_suffix(".md").write_text(report_markdown(result), encoding="utf-8")
    print(f"written: {args.output} and {args.output.with_suffix('.md')}")
    return 0


main = Command("ner-replicas", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
