"""Service-level objectives checked at the end of a Locust run; a breach sets the exit code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Slo:
    p95_ms: float = 500.0
    p99_ms: float = 1000.0
    max_error_rate: float = 0.01

    def breaches(self, p95_ms: float, p99_ms: float, error_rate: float, requests: int) -> list[str]:
        """Human-readable breaches (empty when every objective is met)."""
        out = []
        if requests == 0:
            out.append("no request completed")
        if p95_ms > self.p95_ms:
            out.append(f"p95 latency {p95_ms:.0f} ms > {self.p95_ms:.0f} ms")
        if p99_ms > self.p99_ms:
            out.append(f"p99 latency {p99_ms:.0f} ms > {self.p99_ms:.0f} ms")
        if error_rate > self.max_error_rate:
            out.append(f"error rate {error_rate:.2%} > {self.max_error_rate:.2%}")
        return out


def check(stats_total: Any, slo: Slo) -> list[str]:
    """Breaches of Locust's aggregated ``environment.stats.total``."""
    return slo.breaches(
        stats_total.get_response_time_percentile(0.95) or 0.0,
        stats_total.get_response_time_percentile(0.99) or 0.0,
        stats_total.fail_ratio,
        stats_total.num_requests,
    )
