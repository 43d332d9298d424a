"""`make bench` and the Locust suite, on the tiny model and a real server (bounded, loopback only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ner_triton.bench.run import BenchSettings, bench
from ner_triton.record import BuildReport
from ner_triton.serving.server import ServerSettings
from support import TinyBuild

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_bench_writes_every_peer_ratios_and_plots(tiny_build: TinyBuild, conll_dir: Path, tmp_path: Path) -> None:
    settings = BenchSettings(
        artifacts=tiny_build.artifacts,
        data=str(conll_dir),
        sentences=24,
        batch_sizes=(1, 8),
        concurrency=(1, 4),
        threads=1,
        output=tmp_path,
    )
    result = json.loads(bench(settings, command="pytest").read_text())
    assert set(result["peers"]) == set(settings.peers)
    for name, peer in result["peers"].items():
        assert peer["throughput_sps"] > 0 and 0 < peer["p50_ms"] <= peer["p99_ms"], name
        assert len(peer["runs"]) == 2
    for run in result["peers"]["triton_ner_grpc"]["runs"]:
        assert run["triton"]["bert_avg_batch_size"] >= 1
        assert set(run["triton"]["models"]) == {"ner"}, "the one-step ner is the only model on its path"
    for run in result["peers"]["triton_ensemble_grpc"]["runs"]:
        assert len(run["triton"]["models"]) == 3 and all(m["inferences"] > 0 for m in run["triton"]["models"].values())
    assert [r["batch_size"] for r in result["peers"]["triton_ner_x8_grpc"]["runs"]] == [8, 8]
    served = BuildReport.load(tiny_build.artifacts / "report.json").served.variant
    assert result["served_variant"] == served and result["goals"]["reference"] == f"ort_{served}_inprocess"
    assert {
        "served_vs_inprocess_throughput",
        "served_vs_hf_pipeline_throughput",
        "ner_c1_p50_minus_inprocess_b1_p50_ms",
        "ner_c1_p99_over_p50",
        "ner_c1_same_text_p99_slowdown",
        "ner_1text_saturation_vs_engine",
        "equal_shapes_requests_per_execution",
    } <= set(result["goals"])
    assert result["goals"]["equal_shapes_requests_per_execution"]["value"] >= 1
    assert result["goals"]["ner_c1_same_text_p99_slowdown"]["ratio"] > 0
    # the one-client and saturation rows come from the served side alternating with its reference
    side = result["side_by_side"]
    assert side["one_at_a_time"]["texts"] == result["sentences"] and side["one_at_a_time"]["served_p50_ms"] > 0
    assert len(side["saturation"]) == 3 and all(r["served_sps"] > 0 and r["engine_sps"] > 0 for r in side["saturation"])
    assert "side by side" in result["goals"]["ner_1text_saturation_vs_engine"]["detail"]
    grpc = {n for n in result["peers"] if n.startswith("triton_")}
    assert set(result["goals"]["per_peer_vs_inprocess"]) == grpc == set(result["goals"]["per_peer_vs_engine"])
    # the engine peer runs the served file on the served instances' threads, faster than the whole pipeline
    engine = result["peers"]["ort_engine"]
    assert engine["threads"] == result["machine"]["engine_threads"] >= 1
    assert result["goals"]["engine_limit"]["throughput_sps"] == engine["throughput_sps"]
    assert result["seed"] == 13 and result["machine"]["cpus"] and result["versions"]["onnxruntime"]
    machine = result["machine"]
    assert isinstance(machine["cpu_flags"], list) and machine["load_generator_cpu_s"] > 0
    assert machine["steal_pct"] is None or 0 <= machine["steal_pct"] <= 100
    markdown = (tmp_path / "latest.md").read_text()
    assert "| triton_ner_grpc |" in markdown and "## Where the time goes" in markdown
    assert "share of the engine limit" in markdown and "Steal:" in markdown
    assert (tmp_path / "throughput.png").stat().st_size > 1000 and (tmp_path / "latency.png").is_file()


def _locust(server: ServerSettings, data: Path, prefix: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(Path(sys.executable).parent / "locust"),
        "-f", str(ROOT / "loadtest" / "locustfile.py"),
        "--headless", "-u", "4", "-r", "4", "-t", "6s", "--stop-timeout", "5",
        "--host", server.grpc_url,
        "--ner-data", str(data),
        "--triton-metrics-url", server.metrics_url,
        "--report-prefix", str(prefix),
        "--csv", str(prefix),
        *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_locust_run_meets_a_loose_slo_and_writes_the_merged_report(
    server: ServerSettings, conll_dir: Path, tmp_path: Path
) -> None:
    proc = _locust(server, conll_dir, tmp_path / "ok", "--slo-p95-ms", "20000", "--slo-p99-ms", "30000")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "ok_report.json").read_text())
    total = next(r for r in report["locust"] if r["name"] == "Aggregated")
    assert total["requests"] > 0 and total["failures"] == 0
    assert report["triton"]["ner"]["requests"] == total["requests"]  # the one-step ner: no other model ran
    assert report["triton"]["ner"]["executions"] <= total["requests"]
    assert (tmp_path / "ok_stats.csv").is_file() and "Triton (server side" in (tmp_path / "ok_report.md").read_text()
    # The quality signals beside the latency: every answered request counted, the build's baseline beside them.
    quality = report["quality"]
    assert quality["requests"] == total["requests"] and quality["texts"] >= total["requests"]
    assert quality["baseline_unk_share"] is not None and quality["rejected"]["invalid_input"] == 0
    assert "## Model quality" in (tmp_path / "ok_report.md").read_text()


def test_locust_exit_code_is_1_when_the_slo_is_breached(
    server: ServerSettings, conll_dir: Path, tmp_path: Path
) -> None:
    proc = _locust(server, conll_dir, tmp_path / "breach", "--slo-p95-ms", "0.001")
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "SLO breached: p95 latency" in proc.stderr
    assert json.loads((tmp_path / "breach_report.json").read_text())["breaches"]
