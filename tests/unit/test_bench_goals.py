"""The bench's one-client goals from per-request times (no server: the pairing arithmetic alone)."""

from __future__ import annotations

import json

from ner_triton.bench.peers import Run
from ner_triton.bench.run import goals, same_text_slowdown, summarize
from ner_triton.variants import INT8_DYNAMIC


def _run(ms: list[float], batch_size: int = 1, concurrency: int = 1) -> Run:
    return Run(batch_size, concurrency, len(ms), sum(ms) / 1000, 1.0, 0.0, 0.0, 0.0, 0.0, latencies_ms=tuple(ms))


def test_same_text_pairing_cancels_the_sentences_own_spread_and_shows_a_stall() -> None:
    # long and short sentences: a 4x spread in the work itself, the server adds 0.5 ms to each
    work = [2.0, 8.0] * 50
    served = _run([w + 0.5 for w in work])
    paired = same_text_slowdown(served, _run(work))
    assert paired is not None and paired["p99"] <= 1.25 and paired["max"] == 1.25
    # one 500 ms wait (a batcher's default delay) is what the pairing flags, however long the sentence
    stalled = _run([w + 0.5 for w in work[:-1]] + [508.0])
    paired = same_text_slowdown(stalled, _run(work))
    assert paired is not None and paired["max"] == 63.5 and paired["served_max_ms"] == 508.0


def test_pairing_needs_the_same_texts_one_at_a_time() -> None:
    assert same_text_slowdown(_run([1.0, 2.0]), _run([1.0])) is None
    assert same_text_slowdown(_run([1.0, 2.0], batch_size=8), _run([1.0, 2.0])) is None
    assert same_text_slowdown(_run([1.0, 2.0], concurrency=4), _run([1.0, 2.0])) is None, "4 clients: no order"
    assert same_text_slowdown(_run([]), _run([])) is None


def test_goal_row_and_report_json_keep_the_times_out() -> None:
    work = [2.0, 3.0, 9.0, 4.0]
    runs = {
        "ort_int8_dynamic_inprocess": [_run(work), _run([5.0], batch_size=8)],
        "triton_ner_grpc": [_run([w + 0.4 for w in work]), _run(work, concurrency=4)],
    }
    peers = {name: summarize(r) for name, r in runs.items()}
    row = goals(peers, INT8_DYNAMIC, runs)["ner_c1_same_text_p99_slowdown"]
    assert row["goal"] == "<= 2" and 1 < row["ratio"] <= 1.2
    assert "latencies_ms" not in json.dumps(peers)
    assert "ner_c1_same_text_p99_slowdown" not in goals(peers, INT8_DYNAMIC)
