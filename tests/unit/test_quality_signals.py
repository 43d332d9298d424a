"""The quality signals' definitions (ner_triton.signals), shared by the server and the build, on the real tokenizer
and the runtime's own preprocessing; and the load test's reading of them from a metrics page."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ner_triton.errors import BudgetExceededError, CapacityError, InvalidInputError
from ner_triton.loadtest.metrics import parse_quality, quality_delta, quality_summary
from ner_triton.modeling import default_model_path
from ner_triton.runtime.limits import Limits
from ner_triton.runtime.steps import Preprocessor
from ner_triton.signals import (
    SCORE_BUCKETS,
    Histogram,
    SignalBaseline,
    SignalCounts,
    rejection_reason,
)


@pytest.fixture(scope="module")
def pre() -> Preprocessor:
    return Preprocessor(Path(str(default_model_path())), Limits(max_length=16, stride=4))


def _answer(*entities: tuple[str, float]) -> bytes:
    return json.dumps([{"entity": t, "start": 0, "end": 1, "word": "x", "score": s} for t, s in entities]).encode()


def test_a_request_is_counted_once_per_text_sub_token_and_entity(pre: Preprocessor) -> None:
    long_text = " ".join(["Paris"] * 30)  # 30 sub-tokens: three windows of 14 with overlap
    texts = ["Angela Merkel met Macron in Paris.", long_text, "ሰላም ለዓለም 🚀"]
    tensors = pre.encode_each(texts)
    plain = [pre.tokenizer.encode_plain(t).input_ids for t in texts]
    unk = pre.tokenizer.unk_token_id
    assert unk is not None
    answers = np.array([_answer(("PER", 0.9), ("PER", 0.8), ("LOC", 0.95)), _answer(), _answer(("ORG", 0.4))],
                       dtype=np.object_)  # fmt: skip
    counts = SignalCounts(["LOC", "MISC", "ORG", "PER"], unk, keep_values=True)
    counts.observe([(tensors, answers)])
    assert counts.requests == 1 and counts.texts == 3
    assert counts.tokens == sum(len(ids) for ids in plain)  # overlapping windows: each sub-token once
    assert counts.unk_tokens == sum(ids.count(unk) for ids in plain) > 0
    assert counts.windowed_texts == 1
    assert counts.entities == {"LOC": 1, "MISC": 0, "ORG": 1, "PER": 2}
    assert counts.scores["PER"].count == 2 and counts.scores["PER"].total == pytest.approx(1.7)
    assert counts.windows_hist.total == sum(t["input_ids"].shape[0] for t in tensors) > 3
    assert counts.texts_hist.count == counts.tokens_hist.count == 1 and counts.tokens_hist.total == counts.tokens


def test_histograms_use_prometheus_le_buckets() -> None:
    hist = Histogram(SCORE_BUCKETS)
    hist.add([0.4, 0.41, 0.99, 0.995, 1.0])
    cumulative = dict(zip((*SCORE_BUCKETS, float("inf")), hist.cumulative().tolist(), strict=True))
    assert cumulative[0.4] == 1  # le is inclusive
    assert cumulative[0.5] == 2 and cumulative[0.99] == 3 and cumulative[float("inf")] == 5 == hist.count


def test_rejections_are_counted_by_reason() -> None:
    counts = SignalCounts(["PER"], None)
    for exc in (InvalidInputError("x"), BudgetExceededError("x"), CapacityError("x"), RuntimeError("x")):
        counts.reject(exc)
    assert counts.rejected == {"invalid_input": 1, "over_budget": 1, "capacity": 1, "internal": 1}
    assert rejection_reason(BudgetExceededError("x")) == "over_budget"  # a subclass of InvalidInputError


def test_the_baseline_summarises_and_round_trips() -> None:
    counts = SignalCounts(["LOC", "PER"], 100, keep_values=True)
    ids = np.array([5, 100, 7, 8])
    for score in (0.5, 0.7, 0.9):
        counts.add_request([(ids, 1, _answer(("PER", score)))])
    base = SignalBaseline.from_counts(counts)
    assert base.entity_share == {"LOC": 0.0, "PER": 1.0}
    assert base.entity_score["PER"]["0.5"] == 0.7 and base.entity_score["all"]["0.5"] == 0.7
    assert "LOC" not in base.entity_score  # no scores, no quantiles
    assert base.unk_share == 0.25 and base.tokens_per_text == {"0.1": 4.0, "0.5": 4.0, "0.9": 4.0}
    assert base.entities_per_text == 1.0 and base.windowed_share == 0.0
    from dataclasses import asdict

    assert SignalBaseline.from_dict(json.loads(json.dumps(asdict(base)))) == base


PAGE = """# HELP ner_texts_total Texts answered
# TYPE ner_texts_total counter
ner_texts_total{model="ner",version="1"} %(texts)s
# TYPE ner_tokens_total counter
ner_tokens_total{model="ner",version="1"} %(tokens)s
# TYPE ner_unk_tokens_total counter
ner_unk_tokens_total{model="ner",version="1"} %(unk)s
# TYPE ner_windowed_texts_total counter
ner_windowed_texts_total{model="ner",version="1"} 0
# TYPE ner_entities_total counter
ner_entities_total{entity="PER",model="ner",version="1"} %(per)s
ner_entities_total{entity="LOC",model="ner",version="1"} %(loc)s
# TYPE ner_entity_score_sum counter
ner_entity_score_sum{entity="PER",model="ner",version="1"} %(per_sum)s
ner_entity_score_sum{entity="LOC",model="ner",version="1"} 0
# TYPE ner_entity_score_bucket counter
ner_entity_score_bucket{entity="PER",le="+Inf",model="ner",version="1"} %(per)s
# TYPE ner_request_texts_count counter
ner_request_texts_count{model="ner",version="1"} %(requests)s
# TYPE ner_rejected_requests_total counter
ner_rejected_requests_total{model="ner",reason="invalid_input",version="1"} %(bad)s
# TYPE ner_baseline_unk_share gauge
ner_baseline_unk_share{model="ner",version="1"} 0.001
# TYPE ner_baseline_entity_share gauge
ner_baseline_entity_share{entity="PER",model="ner",version="1"} 0.5
ner_baseline_entity_share{entity="LOC",model="ner",version="1"} 0.5
# TYPE nv_inference_count counter
nv_inference_count{model="ner",version="1"} 7
"""


def test_the_load_test_reads_the_signals_from_a_metrics_page() -> None:
    zero = dict(texts=0, tokens=0, unk=0, per=0, loc=0, per_sum=0, requests=0, bad=0)
    before = parse_quality(PAGE % zero)
    after = parse_quality(PAGE % dict(texts=10, tokens=200, unk=4, per=6, loc=2, per_sum=4.8, requests=3, bad=1))
    assert ("ner_entity_score_bucket", (("entity", "PER"), ("le", "+Inf"), ("model", "ner"), ("version", "1"))) in after
    assert not any(name.startswith("nv_") for name, _ in after)
    assert quality_delta(before, after, "ner_entities_total", model="ner") == 8
    summary = quality_summary(before, after)
    assert summary["requests"] == 3 and summary["texts"] == 10 and summary["tokens_per_text"] == 20.0
    assert summary["unk_share"] == 0.02 and summary["baseline_unk_share"] == 0.001
    assert summary["entities"]["PER"] == {"count": 6, "share": 0.75, "baseline_share": 0.5, "mean_score": 0.8}
    assert summary["rejected"] == {"invalid_input": 1}
    assert quality_summary(before, before) == {}  # no traffic, no figures


def test_the_switch_reads_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    from ner_triton.runtime.quality_metrics import SWITCH_ENV, enabled

    monkeypatch.delenv(SWITCH_ENV, raising=False)
    assert enabled({}) and enabled({"quality_metrics": "1"}) and not enabled({"quality_metrics": "0"})
    monkeypatch.setenv(SWITCH_ENV, "0")
    assert not enabled({"quality_metrics": "1"})
    monkeypatch.setenv(SWITCH_ENV, "1")
    assert enabled({"quality_metrics": "0"})


def test_the_baseline_travels_in_the_served_record_and_served_json(tmp_path: Path) -> None:
    from dataclasses import asdict

    from ner_triton.record import Served
    from ner_triton.runtime.quality_metrics import load_baseline

    counts = SignalCounts(["PER"], 100, keep_values=True)
    counts.add_request([(np.array([1, 2]), 1, _answer(("PER", 0.8)))])
    base = SignalBaseline.from_counts(counts)
    record = {
        "variant": "int8_dynamic",
        "report_key": "onnx_int8_dynamic",
        "triton_model": "ner",
        "passed": True,
        "reason": "r",
        "max_f1_drop_points": 1.0,
        "race": "r",
        "candidates": {},
        "signals": asdict(base),
    }
    served = Served.from_dict(record)
    assert served.signals == base
    (tmp_path / "served.json").write_text(json.dumps(served.as_dict()), encoding="utf-8")
    assert load_baseline(tmp_path) == base  # what the served model reads back
    assert Served.from_dict({**record, "signals": None}).signals is None  # a build from before baselines
    assert load_baseline(tmp_path / "missing") is None


def test_per_text_splits_a_requests_windows(pre: Preprocessor) -> None:
    from ner_triton.runtime.quality_metrics import per_text

    texts = ["Paris", " ".join(["Berlin"] * 30)]
    tensors = pre(np.array([t.encode() for t in texts], dtype=np.object_))
    split = per_text(tensors, len(texts))
    assert [s["input_ids"].shape[0] for s in split] == [1, 3]
    counts = SignalCounts(["LOC"], pre.tokenizer.unk_token_id)
    counts.observe([(split, np.array([b"[]", b"[]"], dtype=np.object_))])
    assert counts.tokens == sum(len(pre.tokenizer.encode_plain(t).input_ids) for t in texts)
    assert counts.windowed_texts == 1 and counts.windows_hist.total == 4
