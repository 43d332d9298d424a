"""The bench's goal rows from side-by-side measurements (no server: the pairing arithmetic alone)."""

from __future__ import annotations

from ner_triton.bench.run import goals
from ner_triton.bench.side_by_side import Paired, median_round
from ner_triton.variants import INT8_DYNAMIC


def test_same_text_pairing_cancels_the_sentences_own_spread_and_shows_a_stall() -> None:
    # mostly short sentences and a few long ones: a 4x spread in the work itself, the server adds 0.5 ms to each
    work = [2.0] * 90 + [8.0] * 10
    paired = Paired(tuple(w + 0.5 for w in work), tuple(work)).summary()
    assert paired["ratio_p99"] <= 1.25 and paired["ratio_max"] == 1.25
    assert paired["served_p99_ms"] / paired["served_p50_ms"] > 2, "a plain p99 / p50 reads the sentences' spread"
    # one 500 ms wait (a batcher's default delay) is what the pairing flags, however long the sentence
    stalled = Paired(tuple([w + 0.5 for w in work[:-1]] + [508.0]), tuple(work)).summary()
    assert stalled["ratio_max"] == 63.5 and stalled["served_max_ms"] == 508.0


def test_goal_rows_read_the_side_by_side_measurements() -> None:
    work = [2.0, 3.0, 9.0, 4.0]
    one = Paired(tuple(w + 0.4 for w in work), tuple(work)).summary()
    rounds = [
        {"served_sps": 500.0, "engine_sps": 600.0, "ratio": 0.833, "load_generator_cpu_share": 0.1},
        {"served_sps": 300.0, "engine_sps": 600.0, "ratio": 0.5, "load_generator_cpu_share": 0.1},
        {"served_sps": 560.0, "engine_sps": 620.0, "ratio": 0.903, "load_generator_cpu_share": 0.1},
    ]
    assert median_round(rounds)["ratio"] == 0.833
    # the peers' own runs (minutes apart) say otherwise: the rows ignore them
    peers = {"ort_int8_dynamic_inprocess": {"throughput_sps": 100.0, "p50_ms": 1.0, "p95_ms": 1.0, "p99_ms": 1.0}}
    out = goals(peers, INT8_DYNAMIC, {"one_at_a_time": one, "saturation": rounds})
    assert out["ner_c1_p50_minus_inprocess_b1_p50_ms"]["value"] == round(
        one["served_p50_ms"] - one["reference_p50_ms"], 2
    )
    assert "back to back: 1.0 ms" in out["ner_c1_p50_minus_inprocess_b1_p50_ms"]["detail"]
    assert 1 < out["ner_c1_same_text_p99_slowdown"]["ratio"] <= 1.2
    assert out["ner_c1_p99_over_p50"]["ratio"] == round(one["served_p99_ms"] / one["served_p50_ms"], 2)
    assert out["ner_1text_saturation_vs_engine"]["ratio"] == 0.833
    assert "0.833, 0.5, 0.903" in out["ner_1text_saturation_vs_engine"]["detail"]
    assert "took 10.0% of the CPUs" in out["ner_1text_saturation_vs_engine"]["detail"]
    bare = goals(peers, INT8_DYNAMIC)
    assert not {"ner_c1_p50_minus_inprocess_b1_p50_ms", "ner_1text_saturation_vs_engine"} & set(bare)
