"""Triton's Prometheus metrics: scrape, diff, and turn into queue/compute time and batch size per model."""

from __future__ import annotations

import re
import urllib.request
from collections import defaultdict
from typing import Any

_LINE = re.compile(r"^(nv_inference_[a-z_]+)\{([^}]*)\}\s+([0-9.eE+-]+)$")
_MODEL = re.compile(r'model="([^"]+)"')
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
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m or m.group(1) not in COUNTERS:
            continue
        model = _MODEL.search(m.group(2))
        if model:
            out[model.group(1)][m.group(1)] = out[model.group(1)].get(m.group(1), 0.0) + float(m.group(3))
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
