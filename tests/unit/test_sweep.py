"""`make sweep`'s grid, its choice of configuration, its report, and the capacity planner's use of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ner_triton.bench.capacity import main as capacity_main
from ner_triton.bench.capacity import sweep_factor
from ner_triton.bench.sweep import STALL_RATIO, _configs, best, grid, load, render_markdown
from ner_triton.errors import ConfigError


def _row(instances: int, threads: int, sent_s: float, p50: float, p99: float) -> dict[str, Any]:
    return {"instances": instances, "threads": threads, "sent_s": sent_s, "load_p99_ms": 50.0, "p50_ms": p50,
            "p99_ms": p99, "stalls": p99 > STALL_RATIO * p50, "steal_pct": 0.0}  # fmt: skip


def test_grid_stays_within_the_cpus() -> None:
    assert grid(1) == [(1, 1)]
    assert grid(2) == [(1, 1), (1, 2), (2, 1)]
    sixteen = grid(16)
    assert {(16, 1), (1, 16), (4, 4), (8, 2)} <= set(sixteen) and all(i * t <= 16 for i, t in sixteen)
    assert (6, 1) in grid(6) and all(i * t <= 6 for i, t in grid(6))


def test_best_skips_stalls_and_prefers_the_lower_p50_among_near_equals() -> None:
    stalled = _row(1, 2, 300.0, 4.0, 510.0)  # the most sent/s, but a 500 ms stall at one client
    fast = _row(2, 1, 250.0, 7.0, 9.0)
    near = _row(1, 1, 240.0, 5.0, 6.0)  # within 5% of the best non-stalling row, lower p50
    assert best([stalled, fast, near]) == near
    assert best([stalled, fast, _row(1, 1, 200.0, 5.0, 6.0)]) == fast
    assert best([stalled]) == stalled  # every row stalls: still a choice
    assert best([]) is None


def test_report_is_readable_and_rendered(tmp_path: Path) -> None:
    rows = [_row(1, 1, 200.0, 5.0, 6.0), _row(2, 1, 250.0, 7.0, 9.0)]
    result = {"command": "ner-sweep", "host": {"cpu_model": "AMD EPYC", "cpus": 2, "cpu_flags": ["avx2"]},
              "served_variant": "int8_dynamic", "sentences": 400, "load_clients": 16, "seconds": 60.0,
              "rows": rows, "best": rows[1]}  # fmt: skip
    text = render_markdown(result)
    assert "| 2x1 (best) | 250.0 |" in text and "AMD EPYC" in text and "avx2" in text
    path = tmp_path / "latest.json"
    assert load(path) is None
    path.write_text(json.dumps(result))
    assert load(path) == result
    path.write_text(json.dumps({"peers": {}}))
    with pytest.raises(ConfigError, match="make sweep"):
        load(path)
    assert _configs("1x2, 2x1") == ((1, 2), (2, 1))
    with pytest.raises(ConfigError, match="INSTANCESxTHREADS"):
        _configs("2-1")


def test_capacity_scales_by_the_sweeps_measured_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = {"rows": [_row(1, 1, 100.0, 5.0, 6.0), _row(1, 2, 120.0, 4.0, 5.0), _row(2, 1, 180.0, 6.0, 8.0)]}
    assert sweep_factor(report, 2, 1) == pytest.approx(1.5)  # each count's best row: 180 / 120
    assert sweep_factor(report, 4, 1) is None and sweep_factor(None, 2, 1) is None
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"host": {}, **report}))
    args = ["--rate", "2000", "--slo-p99-ms", "200", "--measured-instances", "1", "--json"]
    assert capacity_main([*args, "--instances", "2", "--sweep", str(path)]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert capacity_main([*args, "--instances", "2", "--sweep", str(tmp_path / "none.json")]) == 0
    linear = json.loads(capsys.readouterr().out)
    assert measured["mu_rps"] == pytest.approx(0.75 * linear["mu_rps"], rel=0.01)
