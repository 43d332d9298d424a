"""Quality signals as Triton custom metrics (``pb_utils.MetricFamily``), next to Triton's own on the metrics port.

The signals are defined in :mod:`ner_triton.signals` (the build computes its baseline with the same code). A
model instance notes each answered batch in memory (:meth:`QualityMetrics.observe`, one call per batch, which
only takes the sub-token ids; one :meth:`QualityMetrics.reject` per refused request), and a background thread
counts them (reads the answers' JSON) and hands the increments to Triton every ``flush_s`` seconds (default
:data:`~ner_triton.signals.FLUSH_S`): each metric update is a round trip from the stub to the server process
(100-230 us of wall time, 12-17 us of the stub's CPU, measured on the 2-core AMD EPYC while loaded), too dear to
pay per entity or per request on the request's path.

Metrics (every one labelled ``model`` and ``version``; Prometheus names):

==================================================  =========================================================
``ner_texts_total``                                 texts answered
``ner_windowed_texts_total``                        texts that needed more than one window
``ner_tokens_total`` / ``ner_unk_tokens_total``     sub-tokens of the answered texts / of them ``[UNK]``
``ner_entities_total{entity}``                      entities served, per type
``ner_entity_score_{bucket,sum,count}{entity}``     entity scores, per type (histogram, ``le``)
``ner_request_{texts,windows,tokens}_*``            per answered request (histograms, ``le``)
``ner_rejected_requests_total{reason}``             refused requests: invalid_input, over_budget, capacity,
                                                    internal
``ner_baseline_*``                                  the build's figures on its test split (gauges, see below)
==================================================  =========================================================

The histograms are exported in Prometheus' histogram layout (cumulative ``_bucket{le}`` series, ``_sum``,
``_count``) as counters: the python backend's own histogram takes one observation per round trip, a counter
takes a batch's worth in one increment. ``histogram_quantile`` reads them like any histogram.

Baseline gauges (from ``served.json``'s ``signals``): ``ner_baseline_entity_share{entity}``,
``ner_baseline_entity_score{entity,quantile}`` (``entity="all"``: every type), ``ner_baseline_tokens_per_text
{quantile}``, ``ner_baseline_unk_share``, ``ner_baseline_windowed_share``, ``ner_baseline_entities_per_text``.

Instances of a model share each labelled series (Triton adds their increments). Families are kept alive for the
instance's life: a family the stub garbage-collects is removed from the server (seen crashing the server when
another instance was still using it).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ner_triton.schema import INPUT_IDS, OWNED, SERVED_FILE, TEXT_INDEX
from ner_triton.signals import (
    FLUSH_S,
    REJECTION_REASONS,
    Answered,
    Histogram,
    RequestSignals,
    SignalBaseline,
    SignalCounts,
)

PREFIX = "ner_"
SWITCH_ENV = "NER_QUALITY_METRICS"  # "0": off (wins over the config parameter ``quality_metrics``)
# Per-request histograms: name -> (attribute of SignalCounts, description)
REQUEST_HISTOGRAMS = {
    "request_texts": ("texts_hist", "Texts per answered request"),
    "request_windows": ("windows_hist", "Windows (BERT sequences) per answered request"),
    "request_tokens": ("tokens_hist", "Sub-tokens per answered request"),
}


def _fmt(bound: float) -> str:
    """An ``le`` label as Prometheus clients write it (``1``, ``0.95``, ``+Inf``)."""
    return "+Inf" if bound == float("inf") else f"{bound:g}"


class QualityMetrics:
    """The quality metrics of one model instance: count in memory, hand to Triton every ``flush_s`` seconds."""

    def __init__(
        self,
        model: str,
        version: str,
        entity_types: Iterable[str],
        unk_id: int | None,
        baseline: SignalBaseline | None = None,
        flush_s: float = FLUSH_S,
        inputs: bool = True,
        outputs: bool = True,
    ) -> None:
        import triton_python_backend_utils as pb_utils  # only inside a python-backend stub

        self.pb = pb_utils
        self.labels = {"model": model, "version": version}
        self.types = list(entity_types)
        self.unk_id = unk_id
        self.flush_s = flush_s
        self.inputs, self.outputs = inputs, outputs  # which signals this step exports (the fused ner: both)
        self._families: dict[str, Any] = {}
        self._metrics: dict[tuple[str, tuple[tuple[str, str], ...]], Any] = {}
        self._lock = threading.Lock()
        self._pending = self._fresh()  # refusals since the last flush
        self._answered: list[RequestSignals] = []  # answered requests since the last flush, counted by the flusher
        self._stop = threading.Event()
        # every series exists from the start (a rate over a series that appears later misses its first counts)
        self._push(self._fresh(), force=True)
        if baseline is not None:
            self._export_baseline(baseline)
        self._thread = threading.Thread(target=self._loop, name=f"{model}-quality-metrics", daemon=True)
        self._thread.start()

    def _fresh(self) -> SignalCounts:
        return SignalCounts(self.types, self.unk_id)

    # --- the hot path: in memory only ---------------------------------------------------------------------
    def observe(self, answered: Answered) -> None:
        """One call per batch: each answered request's per-text tensors (``INPUT_IDS``, ``OWNED``) and its
        ENTITIES (one JSON array per text). Only the ids are taken here; the flusher thread reads the answers."""
        requests = SignalCounts.extract(answered)
        with self._lock:
            self._answered.extend(requests)

    def reject(self, exc: BaseException) -> None:
        """A refused request (one call each)."""
        with self._lock:
            self._pending.reject(exc)

    # --- the flusher thread -------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> None:
        """Hand what was counted since the last flush to Triton."""
        with self._lock:
            counts, self._pending = self._pending, self._fresh()
            answered, self._answered = self._answered, []
        try:
            for texts in answered:
                counts.add_request(texts)
            self._push(counts)
        except Exception as exc:  # a metric update must never take the model down
            self.pb.Logger.log_error(f"{self.labels['model']}: quality metrics not updated: {exc!r}")

    def close(self) -> None:
        """Stop the flusher and flush what is left (the adapter's ``finalize``)."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.flush()

    # --- Triton's side ------------------------------------------------------------------------------------
    def _metric(self, name: str, kind: str, description: str, **labels: str) -> Any:
        key = (name, tuple(sorted(labels.items())))
        metric = self._metrics.get(key)
        if metric is None:
            family = self._families.get(name)
            if family is None:
                family = self.pb.MetricFamily(name=PREFIX + name, description=description,
                                              kind=getattr(self.pb.MetricFamily, kind))  # fmt: skip
                self._families[name] = family
            metric = self._metrics[key] = family.Metric(labels={**self.labels, **labels})
        return metric

    def _add(self, name: str, description: str, value: float, force: bool, **labels: str) -> None:
        if value or force:
            metric = self._metric(name, "COUNTER", description, **labels)
            if value:
                metric.increment(float(value))

    def _histogram(self, name: str, description: str, hist: Histogram, force: bool, **labels: str) -> None:
        if not hist.count and not force:
            return
        for bound, n in zip((*hist.bounds, float("inf")), hist.cumulative(), strict=True):
            self._add(f"{name}_bucket", description, int(n), force, le=_fmt(bound), **labels)
        self._add(f"{name}_sum", description, hist.total, force, **labels)
        self._add(f"{name}_count", description, hist.count, force, **labels)

    def _push(self, counts: SignalCounts, force: bool = False) -> None:
        if self.inputs:
            self._add("texts_total", "Texts answered", counts.texts, force)
            self._add("windowed_texts_total", "Texts that needed more than one window", counts.windowed_texts, force)
            self._add("tokens_total", "Sub-tokens of the answered texts (each once)", counts.tokens, force)
            if self.unk_id is not None:
                self._add("unk_tokens_total", "Sub-tokens of the answered texts that are [UNK]", counts.unk_tokens,
                          force)  # fmt: skip
            for name, (attr, description) in REQUEST_HISTOGRAMS.items():
                self._histogram(name, description, getattr(counts, attr), force)
            for reason in REJECTION_REASONS:
                self._add("rejected_requests_total", "Refused requests, per reason", counts.rejected[reason], force,
                          reason=reason)  # fmt: skip
        if self.outputs:
            for etype, n in counts.entities.items():
                self._add("entities_total", "Entities served, per type", n, force, entity=etype)
                self._histogram("entity_score", "Entity scores, per type", counts.scores[etype], force, entity=etype)

    def _export_baseline(self, base: SignalBaseline) -> None:
        def gauge(name: str, description: str, value: float, **labels: str) -> None:
            self._metric(f"baseline_{name}", "GAUGE", f"Build baseline on the test split: {description}",
                         **labels).set(float(value))  # fmt: skip

        gauge("unk_share", "[UNK] share of sub-tokens", base.unk_share)
        gauge("windowed_share", "share of texts that needed more than one window", base.windowed_share)
        gauge("entities_per_text", "entities per text", base.entities_per_text)
        for etype, share in base.entity_share.items():
            gauge("entity_share", "share of all entities, per type", share, entity=etype)
        for etype, quantiles in base.entity_score.items():
            for q, score in quantiles.items():
                gauge("entity_score", "entity score quantiles, per type", score, entity=etype, quantile=q)
        for q, tokens in base.tokens_per_text.items():
            gauge("tokens_per_text", "sub-tokens per text quantiles", tokens, quantile=q)


def enabled(params: Mapping[str, str]) -> bool:
    """Quality metrics on, unless ``NER_QUALITY_METRICS`` (or else the config parameter ``quality_metrics``) is 0."""
    raw = os.environ.get(SWITCH_ENV, "").strip() or params.get("quality_metrics", "1").strip()
    return raw not in ("0", "false", "off", "no")


def load_baseline(version_dir: Path) -> SignalBaseline | None:
    """The build's baseline from ``served.json`` (None for a build made before baselines were recorded)."""
    path = version_dir / SERVED_FILE
    if not path.is_file():
        return None
    signals = json.loads(path.read_text(encoding="utf-8")).get("signals")
    return None if signals is None else SignalBaseline.from_dict(signals)


def quality_metrics(
    args: Mapping[str, str],
    params: Mapping[str, str],
    entity_types: Iterable[str] = (),
    unk_id: int | None = None,
    inputs: bool = True,
    outputs: bool = True,
) -> QualityMetrics | None:
    """The quality metrics of a python-backend model instance (``args``: its ``initialize`` arguments), or None
    when switched off. The baseline comes from the version directory's ``served.json`` where there is one (the
    fused ``ner``)."""
    if not enabled(params):
        return None
    config = json.loads(args["model_config"])
    version_dir = Path(args["model_repository"]) / args["model_version"]
    return QualityMetrics(
        model=str(config.get("name", "ner")),
        version=str(args["model_version"]),
        entity_types=entity_types,
        unk_id=unk_id,
        baseline=load_baseline(version_dir),
        flush_s=float(params.get("quality_flush_s", str(FLUSH_S))),
        inputs=inputs,
        outputs=outputs,
    )


def per_text(tensors: Mapping[str, np.ndarray], texts: int) -> list[dict[str, np.ndarray]]:
    """A request's window tensors (all texts together, ``TEXT_INDEX`` naming each window's text) split per text,
    as :meth:`QualityMetrics.observe` takes them (the ensembles' pre- and postprocess steps)."""
    index = tensors[TEXT_INDEX]
    return [{k: tensors[k][index == i] for k in (INPUT_IDS, OWNED) if k in tensors} for i in range(texts)]
