"""Triton's Prometheus metrics: scrape, diff, and turn into queue/compute time and batch size per model; the
served model's quality signals (``ner_*``, :mod:`ner_triton.runtime.quality_metrics`) beside them.

The exposition text is read with ``prometheus_client``'s own parser (the reference implementation of the
format: escaping, label order, exponents, ``NaN``/``+Inf``), not with a pattern of our own.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ner_triton.errors import DataError

QUALITY_PREFIX = "ner_"
COUNTERS = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us",
)


def parse(text: str) -> dict[str, dict[str, float]]:
    """``{model: {metric: value}}`` of the per-model inference counters (versions summed)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise DataError(f"the metrics text is not in the Prometheus exposition format ({exc}).") from exc
    for family in families:
        for sample in family.samples:
            # The parser names a counter's samples `<family>_total` (OpenMetrics style) whether or not the text
            # has the suffix (Triton's has not): the family's name is the metric's name.
            name = family.name if sample.name in (family.name, f"{family.name}_total") else sample.name
            if name not in COUNTERS or "model" not in sample.labels:
                continue
            per_model = out[sample.labels["model"]]
            per_model[name] = per_model.get(name, 0.0) + float(sample.value)
    return dict(out)


def scrape_text(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode("utf-8"))


def scrape(url: str, timeout: float = 2.0) -> dict[str, dict[str, float]]:
    return parse(scrape_text(url, timeout))


Labels = tuple[tuple[str, str], ...]
QualitySamples = dict[tuple[str, Labels], float]


def parse_quality(text: str) -> QualitySamples:
    """Every ``ner_*`` sample: ``(name, sorted labels) -> value``, a counter's name as exported (``_total`` where
    the text has it; the parser's own ``_total`` on the histogram layout's counters dropped)."""
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        raise DataError(f"the metrics text is not in the Prometheus exposition format ({exc}).") from exc
    out: QualitySamples = {}
    for family in families:
        for sample in family.samples:
            name = sample.name
            if family.type == "counter" and name == f"{family.name}_total" and f"{name}" not in text:
                name = family.name  # the parser added the suffix
            if name.startswith(QUALITY_PREFIX):
                out[(name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def quality_delta(before: QualitySamples, after: QualitySamples, name: str, **labels: str) -> float:
    """How much the samples of ``name`` whose labels include ``labels`` grew (all versions summed)."""
    want = set(labels.items())
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == name and want <= set(k[1]))


def quality_summary(before: QualitySamples, after: QualitySamples, model: str = "ner") -> dict[str, Any]:
    """What the model saw and said during a run, and the build's baseline beside it (empty without traffic)."""

    def d(name: str, **labels: str) -> float:
        return quality_delta(before, after, name, model=model, **labels)

    texts, tokens = d("ner_texts_total"), d("ner_tokens_total")
    if texts <= 0:
        return {}
    types = sorted(
        {dict(k[1])["entity"] for k in after if k[0] == "ner_entities_total" and dict(k[1])["model"] == model}
    )
    entities = {t: d("ner_entities_total", entity=t) for t in types}
    total = sum(entities.values())
    baseline = {dict(k[1]).get("entity", ""): v for k, v in after.items()
                if k[0] == "ner_baseline_entity_share" and dict(k[1])["model"] == model}  # fmt: skip
    unk_base = [v for k, v in after.items() if k[0] == "ner_baseline_unk_share" and dict(k[1])["model"] == model]
    return {
        "requests": int(d("ner_request_texts_count")),
        "texts": int(texts),
        "tokens_per_text": round(tokens / texts, 1),
        "unk_share": round(d("ner_unk_tokens_total") / max(tokens, 1), 5),
        "baseline_unk_share": unk_base[0] if unk_base else None,
        "windowed_share": round(d("ner_windowed_texts_total") / texts, 4),
        "entities_per_text": round(total / texts, 3),
        "entities": {
            t: {
                "count": int(n),
                "share": round(n / total, 4) if total else 0.0,
                "baseline_share": baseline.get(t),
                "mean_score": round(d("ner_entity_score_sum", entity=t) / n, 4) if n else None,
            }
            for t, n in entities.items()
        },
        "rejected": {
            dict(k[1])["reason"]: int(d("ner_rejected_requests_total", reason=dict(k[1])["reason"]))
            for k in after
            if k[0] == "ner_rejected_requests_total" and dict(k[1])["model"] == model
        },
    }


def summarize(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Per model: requests, failures, executions, avg batch size, queue and compute ms per request."""
    out: dict[str, Any] = {}
    for model, values in after.items():
        d = {k: values.get(k, 0.0) - before.get(model, {}).get(k, 0.0) for k in COUNTERS}
        requests = d["nv_inference_request_success"] + d["nv_inference_request_failure"]
        if requests <= 0:
            continue
        compute = sum(d[k] for k in COUNTERS if k.startswith("nv_inference_compute_"))
        out[model] = {
            "requests": int(requests),
            "failures": int(d["nv_inference_request_failure"]),
            "executions": int(d["nv_inference_exec_count"]),
            "avg_batch_size": round(d["nv_inference_count"] / max(d["nv_inference_exec_count"], 1), 2),
            "queue_ms_per_request": round(d["nv_inference_queue_duration_us"] / requests / 1000, 3),
            "compute_ms_per_request": round(compute / requests / 1000, 3),
            "request_ms_per_request": round(d["nv_inference_request_duration_us"] / requests / 1000, 3),
        }
    return out
