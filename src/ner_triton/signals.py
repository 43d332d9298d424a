"""Quality signals: what the model sees and says, defined once for the server and the build.

The served model (:mod:`ner_triton.runtime.quality_metrics`) counts these per batch and exports them as Triton
custom metrics; the build counts the same ones on its test split with the same code (:class:`SignalCounts`) and
ships the summary (:class:`SignalBaseline`) with the served model, which exports it as gauges. An alert then
compares live against expected without a second source of truth.

Per text (one text = one string of a request's TEXT tensor):

* **tokens**: the text's sub-tokens, each counted once (the windows' ``owned`` positions: no special tokens, no
  window overlap); **unk_tokens**: those that are the tokenizer's unknown token (``[UNK]``): text in a script
  the vocabulary lacks (a language or domain shift) raises their share.
* **windowed**: the text needed more than one window (longer than ``max_length`` sub-tokens).
* **entities**: the entities the client received, by type, with their scores.

Per request: its texts, windows and tokens (histograms over :data:`TEXTS_BUCKETS`, :data:`WINDOWS_BUCKETS`,
:data:`TOKENS_BUCKETS`). Rejected requests are counted by reason (:func:`rejection_reason`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ner_triton.errors import BudgetExceededError, CapacityError, InvalidInputError
from ner_triton.schema import INPUT_IDS, OWNED

# Upper bounds (Prometheus ``le``) of the histograms; +Inf is implied.
SCORE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 0.99, 0.995, 0.999)
TEXTS_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
WINDOWS_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
TOKENS_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
# Why a request was refused (the error classes the steps raise), as the ``reason`` label.
REJECTION_REASONS = ("invalid_input", "over_budget", "capacity", "internal")
# How often a serving step hands its counts to Triton (config parameter quality_flush_s): readers of the metrics
# port (the load test's report, the overhead bench) wait this long after the last request.
FLUSH_S = 2.0
ALL_TYPES = "all"  # the ``entity`` label of the baseline's figures over every type
QUANTILES = (0.1, 0.5, 0.9)


def rejection_reason(exc: BaseException) -> str:
    """The ``reason`` label of a refused request: ``over_budget`` (a budget of :mod:`ner_triton.runtime.limits`),
    ``invalid_input`` (bad input), ``capacity`` (no room now, retry) or ``internal`` (a server fault)."""
    if isinstance(exc, BudgetExceededError):
        return "over_budget"
    if isinstance(exc, InvalidInputError):
        return "invalid_input"
    if isinstance(exc, CapacityError):
        return "capacity"
    return "internal"


Answered = Sequence[tuple[Sequence[Mapping[str, np.ndarray]], np.ndarray]]  # a batch's requests: tensors, ENTITIES


class Observer(Protocol):
    """Who a serving step hands its batches to: :class:`SignalCounts` (the build),
    :class:`~ner_triton.runtime.quality_metrics.QualityMetrics` (the server)."""

    def observe(self, answered: Answered) -> None: ...

    def reject(self, exc: BaseException) -> None: ...


# One answered request: per text, its owned sub-token ids, its window count and the ENTITIES JSON it got.
RequestSignals = Sequence[tuple[np.ndarray, int, bytes]]


def _owned_ids(tensors: Mapping[str, np.ndarray]) -> np.ndarray:
    """A text's sub-token ids, each once (``OWNED``); without ``INPUT_IDS`` (the ensembles' postprocess step gets
    none) as many placeholders, so the count is still right."""
    owned = tensors[OWNED].astype(bool)
    if INPUT_IDS in tensors:
        return np.asarray(tensors[INPUT_IDS][owned])
    return np.full(int(owned.sum()), -1, dtype=np.int64)


def bucket_counts(values: np.ndarray, bounds: Sequence[float]) -> np.ndarray:
    """Non-cumulative counts of ``values`` per bucket ``(.., bounds[0]], .., (bounds[-1], +Inf)``."""
    return np.bincount(np.searchsorted(np.asarray(bounds, dtype=np.float64), values, side="left"),
                       minlength=len(bounds) + 1)  # fmt: skip


@dataclass
class Histogram:
    """Prometheus-style histogram state: non-cumulative bucket counts, sum and count."""

    bounds: tuple[float, ...]
    counts: np.ndarray = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def add(self, values: Sequence[float] | np.ndarray) -> None:
        arr = np.asarray(values, dtype=np.float64)
        if arr.size:
            self.counts += bucket_counts(arr, self.bounds)
            self.total += float(arr.sum())

    def cumulative(self) -> np.ndarray:
        """Counts per ``le`` bound (the last one is +Inf), as Prometheus exports them."""
        return np.cumsum(self.counts)


class SignalCounts:
    """The signals of many requests, added one batch at a time (:meth:`add`); ``keep_values`` also keeps every
    entity score and tokens-per-text value (the build's exact quantiles, :meth:`SignalBaseline.from_counts`)."""

    def __init__(self, entity_types: Iterable[str], unk_id: int | None, keep_values: bool = False) -> None:
        self.unk_id = unk_id
        self.keep_values = keep_values
        self.requests = self.texts = self.windowed_texts = self.tokens = self.unk_tokens = 0
        self.texts_hist = Histogram(tuple(map(float, TEXTS_BUCKETS)))
        self.windows_hist = Histogram(tuple(map(float, WINDOWS_BUCKETS)))
        self.tokens_hist = Histogram(tuple(map(float, TOKENS_BUCKETS)))
        self.entities: dict[str, int] = {t: 0 for t in entity_types}
        self.scores: dict[str, Histogram] = {t: Histogram(SCORE_BUCKETS) for t in self.entities}
        self.rejected: dict[str, int] = dict.fromkeys(REJECTION_REASONS, 0)
        self.score_values: dict[str, list[float]] = {t: [] for t in self.entities}
        self.tokens_per_text: list[int] = []

    def observe(self, answered: Answered) -> None:
        """A batch of answered requests, as the serving step has them: per request its texts' window tensors
        (``INPUT_IDS``; ``OWNED`` marks each content sub-token once) and its ENTITIES (one JSON array per text)."""
        for texts in self.extract(answered):
            self.add_request(texts)

    @staticmethod
    def extract(answered: Answered) -> list[RequestSignals]:
        """What :meth:`add_request` needs of each answered request, taken from its tensors (cheap: no parsing)."""
        return [
            [
                (_owned_ids(t), int(t[OWNED].shape[0]), answer)
                for t, answer in zip(texts, entities.reshape(-1), strict=True)
            ]
            for texts, entities in answered
        ]

    def add_request(self, texts: RequestSignals) -> None:
        """One answered request: per text, its owned sub-token ids (each sub-token once), its window count and the
        ENTITIES JSON the client received."""
        windows = tokens = 0
        scores: dict[str, list[float]] = {}
        for ids, n_windows, answer in texts:
            n = int(ids.size)
            tokens += n
            windows += n_windows
            self.windowed_texts += n_windows > 1
            if self.unk_id is not None:
                self.unk_tokens += int(np.count_nonzero(ids == self.unk_id))
            for ent in json.loads(answer):
                scores.setdefault(ent["entity"], []).append(ent["score"])
            if self.keep_values:
                self.tokens_per_text.append(n)
        self.requests += 1
        self.texts += len(texts)
        self.tokens += tokens
        self.texts_hist.add([len(texts)])
        self.windows_hist.add([windows])
        self.tokens_hist.add([tokens])
        for etype, values in scores.items():
            if etype not in self.entities:  # a type the label file did not announce: counted all the same
                self.entities[etype] = 0
                self.scores[etype] = Histogram(SCORE_BUCKETS)
                self.score_values[etype] = []
            self.entities[etype] += len(values)
            self.scores[etype].add(values)
            if self.keep_values:
                self.score_values[etype].extend(values)

    def reject(self, exc: BaseException) -> None:
        self.rejected[rejection_reason(exc)] += 1


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    if not len(values):
        return {}
    return {str(q): round(float(np.quantile(np.asarray(values, dtype=np.float64), q)), 4) for q in QUANTILES}


@dataclass(frozen=True)
class SignalBaseline:
    """What the served model's signals were on the build's test split (``Served.signals`` in the build record,
    ``served.json`` in the served model's version directory), exported by the server as ``ner_baseline_*``
    gauges. Scores and tokens per text as quantiles (``"0.1"``, ``"0.5"``, ``"0.9"``)."""

    texts: int
    entities_per_text: float
    entity_share: Mapping[str, float]  # type -> share of all entities
    entity_score: Mapping[str, Mapping[str, float]]  # type (and "all") -> quantile -> score
    tokens_per_text: Mapping[str, float]  # quantile -> sub-tokens
    unk_share: float  # [UNK] sub-tokens / sub-tokens
    windowed_share: float  # texts that needed more than one window / texts

    @classmethod
    def from_counts(cls, counts: SignalCounts) -> SignalBaseline:
        """The summary of ``counts`` (made with ``keep_values``)."""
        total = sum(counts.entities.values())
        every = [s for values in counts.score_values.values() for s in values]
        return cls(
            texts=counts.texts,
            entities_per_text=round(total / max(counts.texts, 1), 4),
            entity_share={t: round(n / total, 4) if total else 0.0 for t, n in sorted(counts.entities.items())},
            entity_score={
                **{t: _quantiles(v) for t, v in sorted(counts.score_values.items()) if v},
                **({ALL_TYPES: _quantiles(every)} if every else {}),
            },
            tokens_per_text=_quantiles(counts.tokens_per_text),
            unk_share=round(counts.unk_tokens / max(counts.tokens, 1), 6),
            windowed_share=round(counts.windowed_texts / max(counts.texts, 1), 6),
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SignalBaseline:
        return cls(
            texts=int(d["texts"]),
            entities_per_text=float(d["entities_per_text"]),
            entity_share={str(k): float(v) for k, v in d["entity_share"].items()},
            entity_score={str(t): {str(q): float(s) for q, s in qs.items()} for t, qs in d["entity_score"].items()},
            tokens_per_text={str(q): float(v) for q, v in d["tokens_per_text"].items()},
            unk_share=float(d["unk_share"]),
            windowed_share=float(d["windowed_share"]),
        )
