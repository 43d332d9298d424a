"""One merged report per Locust run: Locust stats + Triton metrics scraped around the run + SLO verdict,
plus the peers table of the latest benchmark when there is one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ner_triton.loadtest.slo import Slo

BENCH_JSON = Path("benchmarks/results/latest.json")


def locust_rows(stats: Any) -> list[dict[str, Any]]:
    rows = []
    for entry in [*stats.entries.values(), stats.total]:
        if not entry.num_requests and entry is not stats.total:
            continue
        rows.append(
            {
                "name": entry.name,
                "requests": entry.num_requests,
                "failures": entry.num_failures,
                "rps": round(entry.total_rps, 2),
                "p50_ms": entry.get_response_time_percentile(0.5),
                "p95_ms": entry.get_response_time_percentile(0.95),
                "p99_ms": entry.get_response_time_percentile(0.99),
                "avg_bytes": round(entry.avg_content_length, 1),
            }
        )
    return rows


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def write_merged_report(
    prefix: str,
    stats: Any,
    triton: dict[str, Any],
    slo: Slo,
    breaches: list[str],
    bench: Path = BENCH_JSON,
    issued: int | None = None,
    quality: dict[str, Any] | None = None,
) -> Path:
    """``issued``: calls the users started (single-process runs), to show none went unrecorded; ``quality``: what
    the model saw and said during the run (:func:`~ner_triton.loadtest.metrics.quality_summary`)."""
    rows = locust_rows(stats)
    report: dict[str, Any] = {
        "issued": issued,
        "locust": rows,
        "triton": triton,
        "slo": {"p95_ms": slo.p95_ms, "p99_ms": slo.p99_ms, "max_error_rate": slo.max_error_rate},
        "breaches": breaches,
        "quality": quality or {},
    }
    if bench.is_file():
        report["bench_peers"] = {
            k: {m: v[m] for m in ("throughput_sps", "p50_ms", "p99_ms")}
            for k, v in json.loads(bench.read_text(encoding="utf-8"))["peers"].items()
        }
    path = Path(f"{prefix}_report.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = ["# Load test report", "", f"SLO: {'met' if not breaches else 'BREACHED: ' + '; '.join(breaches)}", "",
             "## Locust (client side)", "", "| name | requests | failures | req/s | p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['requests']} | {r['failures']} | {r['rps']} | {r['p50_ms']} | {r['p95_ms']} "
            f"| {r['p99_ms']} |"
        )
    if triton:
        lines += ["", "## Triton (server side, where the time goes)", "",
                  "| model | requests | failures | avg batch | queue ms/req | compute ms/req | total ms/req |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for model, t in sorted(triton.items()):
            lines.append(
                f"| {model} | {t['requests']} | {t['failures']} | {t['avg_batch_size']} | "
                f"{t['queue_ms_per_request']} | {t['compute_ms_per_request']} | {t['request_ms_per_request']} |"
            )
    if quality:
        q = quality
        lines += ["", "## Model quality (what `ner` saw and said, vs the build's test split)", "",
                  f"{q['requests']} requests, {q['texts']} texts, {q['tokens_per_text']} sub-tokens per text, "
                  f"[UNK] share {q['unk_share']:.3%} (baseline {_pct(q['baseline_unk_share'])}), "
                  f"{q['windowed_share']:.2%} windowed, {q['entities_per_text']} entities per text; refused: "
                  + (", ".join(f"{k} {v}" for k, v in q["rejected"].items() if v) or "none") + ".", "",
                  "| entity | count | share | baseline share | mean score |", "|---|---|---|---|---|"]  # fmt: skip
        for etype, e in q["entities"].items():
            lines.append(f"| {etype} | {e['count']} | {e['share']:.1%} | {_pct(e['baseline_share'])} | "
                         f"{e['mean_score'] if e['mean_score'] is not None else '-'} |")  # fmt: skip
    if "bench_peers" in report:
        lines += [
            "",
            "## Peers (latest `make bench`)",
            "",
            "| peer | best sent/s | p50 ms | p99 ms |",
            "|---|---|---|---|",
        ]
        for k, v in report["bench_peers"].items():
            lines.append(f"| {k} | {v['throughput_sps']} | {v['p50_ms']} | {v['p99_ms']} |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
