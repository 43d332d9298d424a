"""The goals' measurements, taken side by side in time.

On these shared machines the CPU's speed changes in phases of seconds to minutes, without any steal time to show
for it. Measured on the 2-core AVX-512 EPYC (docs/results.md): ONNX Runtime alone on the served file, one process
started a few seconds after the last, ran at 1.1 or 2.0 ms p50 (batch 1) and 937 or 573 sent/s (batch 8), nothing
in between. ``make bench`` runs its peers one after another, minutes apart, so the ratio of two peers' results can
be off by that factor either way - a goal met or missed by the machine, not by the server. The goal rows come from
here instead: the served side and its reference alternate, so both see the same phases.

* :func:`one_at_a_time` - ``ner`` at one client against the in-process peer at batch 1, in blocks of ``block`` texts:
  the same texts in both blocks, the block order alternating, each block after one untimed call. Both run back to
  back inside a block (the in-process peer as in its own run), so what differs is the server, text by text.
* :func:`saturation` - ``ner`` at ``concurrency`` clients (1 text per request) against the engine peer at its best
  batch, in ``rounds`` rounds of alternating order; the goal reads the median round's ratio.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ner_triton.bench.peers import OrtEngine, run_engine, run_grpc
from ner_triton.client import NerClient
from ner_triton.schema import ENSEMBLE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paired:
    """Each text's time served and in process (ms), in the texts' order."""

    served_ms: tuple[float, ...]
    reference_ms: tuple[float, ...]

    def summary(self) -> dict[str, Any]:
        served, ref = np.array(self.served_ms), np.array(self.reference_ms)
        ratio = served / ref

        def pct(a: np.ndarray, q: float) -> float:
            return round(float(np.percentile(a, q)), 2)

        return {
            "texts": len(served),
            "served_p50_ms": pct(served, 50),
            "served_p99_ms": pct(served, 99),
            "served_max_ms": round(float(served.max()), 2),
            "reference_p50_ms": pct(ref, 50),
            "reference_p99_ms": pct(ref, 99),
            "ratio_p50": pct(ratio, 50),
            "ratio_p99": pct(ratio, 99),
            "ratio_max": round(float(ratio.max()), 2),
        }


def _timed(fn: Callable[[list[str]], object], texts: Sequence[str]) -> list[float]:
    """Each text's time through ``fn``, after one untimed call: the side that sat idle through the other side's
    block has gone cold (its caches, its threads asleep), a cost of the alternation, not of either side."""
    fn([texts[0]])
    out = []
    for text in texts:
        t = time.perf_counter()
        fn([text])
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def one_at_a_time(
    url: str, reference: Callable[[list[str]], object], texts: Sequence[str], block: int = 40, warmup: int = 8
) -> Paired:
    """``ner`` at one client and ``reference`` (one text per call), alternating in blocks of the same texts."""
    served_ms: list[float] = []
    reference_ms: list[float] = []
    with NerClient(url, ENSEMBLE, timeout_s=120) as client:
        for text in texts[:warmup]:
            client.extract([text])
            reference([text])
        for n, a in enumerate(range(0, len(texts), block)):
            part = texts[a : a + block]
            if n % 2:
                s = _timed(client.extract, part)
                r = _timed(reference, part)
            else:
                r = _timed(reference, part)
                s = _timed(client.extract, part)
            served_ms += s
            reference_ms += r
    return Paired(tuple(served_ms), tuple(reference_ms))


def saturation(
    url: str, engine: OrtEngine, texts: Sequence[str], concurrency: int, batch_size: int, rounds: int = 3
) -> list[dict[str, float]]:
    """``rounds`` pairs of (``ner`` at ``concurrency`` clients, 1 text per request; the engine at ``batch_size``),
    in alternating order: each round's throughputs, their ratio and the share of the host's CPUs the load generator
    (this process's gRPC clients) took from the server."""
    out = []
    cpus = os.cpu_count() or 1
    for n in range(rounds):
        if n % 2:
            run = run_grpc(url, ENSEMBLE, ENSEMBLE, texts, concurrency)
            limit = run_engine(engine, texts, batch_size).throughput_sps
        else:
            limit = run_engine(engine, texts, batch_size).throughput_sps
            run = run_grpc(url, ENSEMBLE, ENSEMBLE, texts, concurrency)
        served = run.throughput_sps
        # the gRPC clients run on the server's cores; the engine has them all (reported, not part of the goal)
        load = min(0.99, run.client_cpu_pct / 100 / cpus)
        out.append({"served_sps": served, "engine_sps": limit, "ratio": round(served / limit, 3),
                    "load_generator_cpu_share": round(load, 3)})  # fmt: skip
        log.info("saturation round %d: ner %.1f / engine %.1f sent/s", n + 1, served, limit)
    return out


def median_round(rounds: Sequence[dict[str, float]]) -> dict[str, float]:
    """The round of median ratio (an odd count: one of the rounds itself)."""
    return sorted(rounds, key=lambda r: r["ratio"])[(len(rounds) - 1) // 2]
