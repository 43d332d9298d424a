"""The capacity planner's M/M/1 model, on a hand-made curve and on the committed bench report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ner_triton.bench.capacity import Curve, main, p99_ms, plan
from ner_triton.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
CURVE = Curve.from_runs(
    [
        {"concurrency": 1, "throughput_sps": 100.0, "p99_ms": 15.0},
        {"concurrency": 16, "throughput_sps": 300.0, "p99_ms": 110.0},
        {"concurrency": 4, "throughput_sps": 200.0, "p99_ms": 40.0},
    ]
)


def test_curve_is_ordered_by_concurrency_with_its_peak_and_unloaded_latency() -> None:
    assert [c for c, _, _ in CURVE.points] == [1, 4, 16]
    assert CURVE.peak_rps == 300.0 and CURVE.unloaded_p99_ms == 15.0


def test_flat_curve_is_mm1_and_never_beats_the_unloaded_latency() -> None:
    """A replica that serves 300/s whatever the load is an M/M/1 queue: p99 = ln(100) / (mu - r)."""
    flat = Curve.from_runs([{"concurrency": 1, "throughput_sps": 300.0, "p99_ms": 20.0}])
    assert math.isclose(p99_ms(flat, 250.0), 1000 * math.log(100) / 50)
    assert math.isclose(p99_ms(flat, 100.0), 1000 * math.log(100) / 200)
    assert p99_ms(flat, 10.0) == 20.0  # below the latency one client measured: that floor
    assert p99_ms(flat, 300.0) == math.inf


def test_batching_curve_is_slower_than_its_peak_at_light_load() -> None:
    """With X(1) = 100 < peak 300 a replica is slower at low load than M/M/1 at the peak would say,
    and p99 rises monotonically with the rate."""
    flat = Curve.from_runs([{"concurrency": 1, "throughput_sps": 300.0, "p99_ms": 15.0}])
    rates = [50.0, 100.0, 150.0, 200.0, 250.0, 290.0]
    curve = [p99_ms(CURVE, r) for r in rates]
    assert curve == sorted(curve) and all(a > b for a, b in zip(curve, [p99_ms(flat, r) for r in rates], strict=True))
    assert p99_ms(CURVE, 299.9) > 10_000


def test_plan_takes_the_fewest_replicas_that_meet_the_slo() -> None:
    p = plan(CURVE, rate_rps=1000, slo_p99_ms=100)
    assert p.p99_ms <= 100 < plan(CURVE, 1000, 100, replicas=p.replicas - 1).p99_ms
    assert p.per_replica_rps <= p.max_rps_per_replica < CURVE.peak_rps
    assert p.utilization == round(p.per_replica_rps / 300, 3)


def test_impossible_slo_names_the_fix() -> None:
    with pytest.raises(ConfigError, match="not above what the model gives one replica at vanishing load"):
        plan(CURVE, rate_rps=10, slo_p99_ms=10)  # the curve's one-client p99 is 15 ms
    # Above the measured 15 ms but below the model's floor ln(100)/X(1) = 46 ms: refused, not a search forever.
    with pytest.raises(ConfigError, match=r"\(46\.1 ms; measured at one client: 15\.0 ms p99\)"):
        plan(CURVE, rate_rps=10, slo_p99_ms=30)
    with pytest.raises(ConfigError, match="must be positive"):
        plan(CURVE, rate_rps=0, slo_p99_ms=100)


def test_reads_the_committed_bench_report_and_a_replicas_report(tmp_path: Path) -> None:
    bench = Curve.load(ROOT / "benchmarks" / "results" / "latest.json")
    report = json.loads((ROOT / "benchmarks" / "results" / "latest.json").read_text())
    assert bench.peak_rps == report["peers"]["triton_ner_grpc"]["throughput_sps"]
    replicas = {"counts": {"1": {"closed_loop": [{"concurrency": 2, "throughput_sps": 5.0, "p99_ms": 9.0}]}}}
    (tmp_path / "r.json").write_text(json.dumps(replicas))
    assert Curve.load(tmp_path / "r.json").peak_rps == 5.0
    with pytest.raises(ConfigError, match="no peer 'nope'"):
        Curve.load(ROOT / "benchmarks" / "results" / "latest.json", peer="nope")
    with pytest.raises(ConfigError, match="make bench"):
        Curve.load(tmp_path / "missing.json")


def test_command_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rate", "1000", "--slo-p99-ms", "100", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["replicas"] >= 1 and out["p99_ms"] <= 100
    assert main(["--rate", "1000", "--slo-p99-ms", "1"]) == 2
    assert "relax the SLO" in capsys.readouterr().err


def test_check_compares_the_model_with_a_replicas_measurement() -> None:
    from ner_triton.bench.capacity import check

    runs = [{"concurrency": c, "throughput_sps": x, "p99_ms": ms} for c, x, ms in CURVE.points]
    report = {
        "counts": {
            "1": {"closed_loop": runs, "peak_rps": 300.0, "open_loop": {"rate_rps": 150.0, "p99_ms": 60.0}},
            "2": {"closed_loop": runs, "peak_rps": 310.0, "open_loop": {"rate_rps": 150.0, "p99_ms": 70.0}},
        }
    }
    one, two = check(report)
    assert one["predicted_p99_ms"] == round(p99_ms(CURVE, 150.0), 1)
    assert two["predicted_p99_ms"] == round(p99_ms(CURVE, 75.0), 1) and two["predicted_peak_rps"] == 600.0


def test_replicas_of_more_instances_need_fewer_replicas() -> None:
    """The planner agrees with NER_INSTANCES: a replica of 4 instances (a 4-CPU pod) is planned as twice the
    measured 2-instance one (linear by instances, as measured on the Xeon up to 84% at 16)."""
    four = CURVE.scaled(2.0)
    assert four.peak_rps == pytest.approx(2 * CURVE.peak_rps)
    assert four.unloaded_p99_ms == CURVE.unloaded_p99_ms
    assert plan(four, 1000, 100).replicas < plan(CURVE, 1000, 100).replicas
    with pytest.raises(ConfigError, match="--instances"):
        CURVE.scaled(0)


def test_command_plans_for_the_pod_instances(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rate", "2000", "--slo-p99-ms", "200", "--instances", "4", "--json"]) == 0
    four = json.loads(capsys.readouterr().out)
    assert main(["--rate", "2000", "--slo-p99-ms", "200", "--json"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert four["mu_rps"] == pytest.approx(2 * two["mu_rps"], rel=0.01)
    assert four["replicas"] <= two["replicas"]
