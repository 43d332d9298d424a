"""Triton's Prometheus metrics: scrape, diff, and turn into queue/compute time and batch size per model.

The exposition text is read with ``prometheus_client``'s own parser (the reference implementation of the
format: escaping, label order, exponents, ``NaN``/``+Inf``), not with a pattern of our own.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from ner_triton.errors import DataError

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


def scrape(url: str, timeout: float = 2.0) -> dict[str, dict[str, float]]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return parse(resp.read().decode("utf-8"))


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
