"""Capacity planner: how many replicas a request rate needs under a p99 latency SLO.

Model: a replica is a **flow-equivalent server** (Chandy, Herzog and Woo, 1975) - a queue whose
service rate with ``n`` requests inside is the throughput ``X(n)`` the bench measured for one replica
in closed loop at concurrency ``n`` (interpolated between the measured concurrencies, the peak
beyond the largest). This keeps what dynamic batching does: a replica serves faster the more
requests wait. With Poisson arrivals at rate ``r`` the number in the replica is a birth-death chain,

    p(n) = p(0) * prod_{k=1..n} r / X(k),      mean latency W = E[n] / r   (Little's law)

and the p99 latency is taken as ``W * ln(100)`` (exact for the exponential sojourn time of M/M/1),
never below the p99 measured with one client. The load balancer splits the rate evenly over N
replicas; the plan is the smallest N whose p99 meets the SLO. The model assumes replicas on their own
cores; the local multi-replica mode shares 2 cores, where more replicas add no capacity
(`ner-replicas measure` shows it, `--check` compares model and measurement).

A replica in a cluster runs one instance of the one-step ``ner`` per CPU of its limit (``NER_INSTANCES``,
docs/scaling.md), and this model scales by instances: on a 16-core Xeon 1, 4, 8 and 16 instances served 490, 2,002,
3,495 and 6,566 sent/s (16 instances: 13.4x one). ``--instances`` plans for replicas of that many instances from a
curve measured with ``--measured-instances`` (the CPUs the committed repository is written for, which ``make bench``
serves; ``ner`` has one more instance for the bulk lane of large requests): the
curve is scaled as that many copies side by side - linear, an upper bound (13.4/16 = 84% of it at 16 on the Xeon).
Where a ``make sweep`` report (``--sweep``, default ``benchmarks/sweep/latest.json``) measured both instance counts
on one host, the curve is scaled by the measured ratio of their best rows' sent/s instead (:func:`sweep_factor`).

    ner-capacity --rate 1000 --slo-p99-ms 100                 # from benchmarks/results/latest.json
    ner-capacity --rate 5000 --slo-p99-ms 200 --instances 4   # replicas of 4 CPUs / 4 instances each
    ner-capacity --check benchmarks/replicas/report.json      # predicted vs measured p99, local replicas
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ner_triton.bench.sweep import load as sweep_report
from ner_triton.cli import Command
from ner_triton.client import AsyncNerClient
from ner_triton.errors import ConfigError, NerTritonError
from ner_triton.repository.model_configs import RepositorySettings

LN100 = math.log(100.0)


@dataclass(frozen=True)
class Curve:
    """One replica's closed-loop measurements: (concurrency, throughput sent/s, p99 ms), by concurrency."""

    points: tuple[tuple[int, float, float], ...]

    @classmethod
    def from_runs(cls, runs: Sequence[dict[str, Any]]) -> Curve:
        pts = tuple(sorted((int(r["concurrency"]), float(r["throughput_sps"]), float(r["p99_ms"])) for r in runs))
        if not pts:
            raise ConfigError("no measurements in the curve: run `make bench` (or `ner-replicas measure`) first.")
        return cls(pts)

    @classmethod
    def load(cls, path: Path, peer: str = "triton_ner_grpc") -> Curve:
        """From a bench report (``peers.<peer>.runs``) or a replicas report (``counts.1.closed_loop``)."""
        if not path.is_file():
            raise ConfigError(f"{path} does not exist: run `make bench` or `make replicas-measure` first.")
        data = json.loads(path.read_text(encoding="utf-8"))
        if "peers" in data:
            if peer not in data["peers"]:
                raise ConfigError(f"{path} has no peer {peer!r}; it has {sorted(data['peers'])}.")
            return cls.from_runs(data["peers"][peer]["runs"])
        if "counts" in data and "1" in data["counts"]:
            return cls.from_runs(data["counts"]["1"]["closed_loop"])
        raise ConfigError(f"{path} is neither a bench report nor a replicas report.")

    def scaled(self, factor: float) -> Curve:
        """A replica with ``factor`` times the instances: as many copies of the measured one side by side
        (``factor * n`` requests inside run at ``factor`` times the throughput, at the same latency)."""
        if factor <= 0:
            raise ConfigError(
                f"instance ratio {factor} must be positive: give --instances and --measured-instances >= 1."
            )
        return Curve(tuple((max(1, round(c * factor)), x * factor, p) for c, x, p in self.points))

    @property
    def peak_rps(self) -> float:
        return max(x for _, x, _ in self.points)

    @property
    def unloaded_p99_ms(self) -> float:
        return self.points[0][2]


@dataclass(frozen=True)
class Plan:
    rate_rps: float
    slo_p99_ms: float
    replicas: int
    per_replica_rps: float
    mu_rps: float
    max_rps_per_replica: float
    p99_ms: float
    utilization: float

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def throughput_at(curve: Curve, n: int) -> float:
    """X(n): closed-loop throughput with ``n`` requests in the replica (linear between measurements)."""
    pts = [(0, 0.0)] + [(c, x) for c, x, _ in curve.points]
    best = max(x for _, x in pts)
    if n >= pts[-1][0]:
        return best
    for (c0, x0), (c1, x1) in itertools.pairwise(pts):
        if c0 <= n <= c1:
            return min(best, x0 + (x1 - x0) * (n - c0) / (c1 - c0))
    return best


def p99_ms(curve: Curve, rate_per_replica: float) -> float:
    """p99 latency (ms) of one replica under Poisson arrivals at ``rate_per_replica`` (inf at or past the peak)."""
    if rate_per_replica <= 0:
        return curve.unloaded_p99_ms
    if rate_per_replica >= curve.peak_rps:
        return math.inf
    weight, total, mean_n = 1.0, 1.0, 0.0
    top = curve.points[-1][0]  # from here on X(n) is the peak: the rest of the chain is geometric
    for n in range(1, top + 1):
        weight *= rate_per_replica / throughput_at(curve, n)
        total += weight
        mean_n += n * weight
    q = rate_per_replica / curve.peak_rps
    total += weight * q / (1 - q)
    mean_n += weight * (top * q / (1 - q) + q / (1 - q) ** 2)
    latency_s = (mean_n / total) / rate_per_replica
    return max(curve.unloaded_p99_ms, 1000.0 * LN100 * latency_s)


def min_p99_ms(curve: Curve) -> float:
    """The model's p99 as the rate goes to 0: one request at a time, at the one-client throughput."""
    return max(curve.unloaded_p99_ms, 1000.0 * LN100 / throughput_at(curve, 1))


def plan(curve: Curve, rate_rps: float, slo_p99_ms: float, replicas: int | None = None) -> Plan:
    """The replicas ``rate_rps`` needs under ``slo_p99_ms`` (or the prediction for a given ``replicas``)."""
    if rate_rps <= 0 or slo_p99_ms <= 0:
        raise ConfigError(f"rate={rate_rps} and slo_p99_ms={slo_p99_ms} must be positive.")
    if replicas is None:
        floor = min_p99_ms(curve)
        if slo_p99_ms <= floor:
            raise ConfigError(
                f"a p99 of {slo_p99_ms} ms is not above what the model gives one replica at vanishing load "
                f"({floor:.1f} ms; measured at one client: {curve.unloaded_p99_ms} ms p99): relax the SLO, or make "
                "each request cheaper (INT8, pruning, a GPU engine)."
            )
        replicas = max(1, math.ceil(rate_rps / curve.peak_rps))
        while p99_ms(curve, rate_rps / replicas) > slo_p99_ms:  # ends: p99 falls towards the floor as N grows
            replicas += 1
    per = rate_rps / replicas
    lo, hi = 0.0, curve.peak_rps  # the most one replica takes within the SLO (bisection)
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p99_ms(curve, mid) <= slo_p99_ms else (lo, mid)
    return Plan(round(rate_rps, 1), slo_p99_ms, replicas, round(per, 1), round(curve.peak_rps, 1), round(lo, 1),
                round(p99_ms(curve, per), 1), round(per / curve.peak_rps, 3))  # fmt: skip


def check(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Predicted (from the N=1 curve) vs measured open-loop p99 for each replica count of a replicas report."""
    if "1" not in report.get("counts", {}):
        raise ConfigError("the replicas report has no 1-replica run to predict from: measure with --replicas 1,...")
    base = Curve.from_runs(report["counts"]["1"]["closed_loop"])
    rows = []
    for n, entry in sorted(report["counts"].items(), key=lambda kv: int(kv[0])):
        measured = entry["open_loop"]
        predicted = plan(base, measured["rate_rps"], slo_p99_ms=1e9, replicas=int(n))
        rows.append(
            {
                "replicas": int(n),
                "rate_rps": measured["rate_rps"],
                "measured_p99_ms": measured["p99_ms"],
                "predicted_p99_ms": predicted.p99_ms,
                "measured_peak_rps": entry["peak_rps"],
                "predicted_peak_rps": round(int(n) * base.peak_rps, 1),
            }
        )
    return rows


def open_loop(url: str, texts: Sequence[str], rate_rps: float, seconds: float, seed: int = 13) -> dict[str, Any]:
    """Poisson arrivals at ``rate_rps`` for ``seconds`` (one sentence per request), asyncio gRPC client:
    the load the model assumes. Every request ends as a latency or a counted failure."""

    async def go() -> dict[str, Any]:
        rng = random.Random(seed)
        latencies: list[float] = []
        failures: list[str] = []
        async with AsyncNerClient(url, timeout_s=30) as client:
            await client.extract([texts[0]])  # connect before the clock starts

            async def one(text: str) -> None:
                t0 = time.perf_counter()
                try:
                    await client.extract([text])
                    latencies.append(time.perf_counter() - t0)
                except NerTritonError as exc:
                    failures.append(str(exc))

            tasks = []
            start = time.perf_counter()
            next_at = start
            while next_at - start < seconds:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                tasks.append(asyncio.create_task(one(rng.choice(texts))))
                next_at += rng.expovariate(rate_rps)
            await asyncio.gather(*tasks)
            elapsed = time.perf_counter() - start
        ms = np.array(latencies) * 1000

        def pct(q: float) -> float | None:
            return round(float(np.percentile(ms, q)), 1) if latencies else None

        return {
            "requests": len(tasks),
            "failures": len(failures),
            "first_failure": failures[0] if failures else None,
            "achieved_rps": round(len(latencies) / elapsed, 1),
            "p50_ms": pct(50),
            "p99_ms": pct(99),
        }

    return asyncio.run(go())


def check_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| replicas | open-loop rate | p99 measured | p99 predicted | peak measured | peak predicted |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['replicas']} | {r['rate_rps']} | {r['measured_p99_ms']} | {r['predicted_p99_ms']} | "
            f"{r['measured_peak_rps']} | {r['predicted_peak_rps']} |"
        )
    return "\n".join(lines)


def sweep_factor(report: dict[str, Any] | None, instances: int, measured: int) -> float | None:
    """Throughput of ``instances`` instances over ``measured`` ones as a sweep report measured them (each count's
    best row over its thread counts), None when the report lacks either count."""
    if not report:
        return None
    by_count: dict[int, float] = {}
    for row in report.get("rows", []):
        by_count[row["instances"]] = max(by_count.get(row["instances"], 0.0), float(row["sent_s"]))
    if instances not in by_count or not by_count.get(measured):
        return None
    return by_count[instances] / by_count[measured]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, help="target request rate (sentences/s)")
    parser.add_argument("--slo-p99-ms", type=float)
    parser.add_argument("--check", type=Path, help="a `ner-replicas measure` report: predicted vs measured")
    parser.add_argument("--curve", type=Path, default=Path("benchmarks/results/latest.json"))
    parser.add_argument("--peer", default="triton_ner_grpc", help="peer of a bench report to plan for")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument(
        "--instances",
        type=int,
        help="`ner` instances per planned replica (its pod's CPUs, NER_INSTANCES; default: as measured)",
    )
    parser.add_argument(
        "--measured-instances",
        type=int,
        default=RepositorySettings(ner_instances=None).batching.instances,
        help="`ner` instances of the server the curve was measured on (default: the committed repository's)",
    )
    parser.add_argument(
        "--sweep",
        type=Path,
        default=Path("benchmarks/sweep/latest.json"),
        help="a `make sweep` report: --instances scales by its measured ratio instead of linearly (when it has both)",
    )


def _run(args: argparse.Namespace) -> int:
    if args.check:
        rows = check(json.loads(args.check.read_text(encoding="utf-8")))
        print(json.dumps(rows, indent=2) if args.json else check_table(rows))
        return 0
    if args.rate is None or args.slo_p99_ms is None:
        args.parser.error("--rate and --slo-p99-ms are required (or --check REPORT)")
    curve = Curve.load(args.curve, args.peer)
    scaling = ""
    if args.instances is not None:
        factor = sweep_factor(sweep_report(args.sweep), args.instances, args.measured_instances)
        scaling = f"measured by {args.sweep}" if factor is not None else "linear"
        curve = curve.scaled(factor if factor is not None else args.instances / args.measured_instances)
    best = plan(curve, args.rate, args.slo_p99_ms)
    if args.json:
        print(json.dumps(best.as_dict(), indent=2))
        return 0
    if args.instances is not None:
        print(f"replicas of {args.instances} instances, scaled from {args.measured_instances} as measured ({scaling})")
    print(f"one replica ({args.curve}): peak {curve.peak_rps:.1f} sent/s, unloaded p99 {curve.unloaded_p99_ms} ms")
    print(f"per replica: at most {best.max_rps_per_replica} sent/s under p99 {args.slo_p99_ms:g} ms (Poisson arrivals)")
    print(f"-> {best.replicas} replicas for {args.rate:g} sent/s\n")
    print("| replicas | sent/s each | utilization | predicted p99 ms | meets SLO |\n|---|---|---|---|---|")
    for n in range(max(1, best.replicas - 1), best.replicas + 3):
        p = plan(curve, args.rate, args.slo_p99_ms, replicas=n)
        ok = "yes" if p.p99_ms <= args.slo_p99_ms else "no"
        print(f"| {n} | {p.per_replica_rps} | {p.utilization:.0%} | {p.p99_ms} | {ok} |")
    return 0


main = Command("ner-capacity", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
