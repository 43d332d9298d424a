"""F1 with its uncertainty: a paired bootstrap over sentences, seeded and vectorised.

Each variant's F1, and its difference from the reference (FP32 ONNX), gets a 95% percentile interval:

1. counted once - per sentence and variant, the entity-level true positives, false positives and false
   negatives (:func:`sentence_counts`; the entities of seqeval's default, conlleval-compatible mode, the same
   ones :func:`~ner_triton.pipeline.evaluate.score_tags` scores, so the counts sum to the reported F1);
2. resampled - ``resamples`` draws of the sentences with replacement, the *same* draw for every variant
   (paired: a sentence that is hard for FP32 is hard for INT8 too, so the difference's interval is far
   narrower than the two F1 intervals), each draw as per-sentence multiplicities (a multinomial), so one
   matrix product sums a block of draws for every variant at once.

Cheap enough to run on every build: on CoNLL-2003 test (3,453 sentences) counting takes a fraction of a
second a variant and 1,000 resamples of five variants about a second (figures in docs/results.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95
METHOD = "paired bootstrap over sentences (percentile interval)"


def _entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    from seqeval.metrics.sequence_labeling import get_entities

    return set(get_entities(list(tags)))


def sentence_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> np.ndarray:
    """``(sentences, 3)`` int64: true positives, false positives, false negatives of each sentence's entities."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    out = np.zeros((len(gold), 3), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gold, pred, strict=True)):
        ge, pe = _entities(g), _entities(p)
        tp = len(ge & pe)
        out[i] = (tp, len(pe) - tp, len(ge) - tp)
    return out


def f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Micro F1 of summed ``(..., 3)`` counts: 2 TP / (2 TP + FP + FN), 0 where there is nothing to score."""
    counts = np.asarray(counts, dtype=np.float64)
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    denominator = 2 * tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def paired_bootstrap(
    counts: Mapping[str, np.ndarray],
    reference: str,
    resamples: int = RESAMPLES,
    seed: int = 13,
    confidence: float = CONFIDENCE,
    block: int = 250,
) -> dict[str, dict[str, float]]:
    """Per variant (key of ``counts``, each ``(sentences, 3)`` from :func:`sentence_counts` on the same
    sentences): ``f1`` and ``delta_points`` (against ``reference``, in F1 points) with their interval
    (``f1_low``/``f1_high``, ``delta_low``/``delta_high``)."""
    if reference not in counts:
        raise ValueError(f"the reference {reference!r} has no counts (have: {', '.join(counts)})")
    names = list(counts)
    stacked = np.stack([np.asarray(counts[n], dtype=np.float64) for n in names], axis=1)  # (N, V, 3)
    n = stacked.shape[0]
    if n == 0:
        raise ValueError("no sentences to resample")
    flat = stacked.reshape(n, -1)
    rng = np.random.default_rng(seed)
    sums = []
    for start in range(0, resamples, block):
        weights = rng.multinomial(n, np.full(n, 1.0 / n), size=min(block, resamples - start))  # (b, N)
        sums.append(weights.astype(np.float64) @ flat)
    f1 = f1_from_counts(np.concatenate(sums).reshape(resamples, len(names), 3))  # (B, V)
    ref = names.index(reference)
    delta = (f1 - f1[:, [ref]]) * 100
    point = f1_from_counts(stacked.sum(axis=0))
    tail = (1 - confidence) / 2 * 100
    f1_lo, f1_hi = np.percentile(f1, [tail, 100 - tail], axis=0)
    d_lo, d_hi = np.percentile(delta, [tail, 100 - tail], axis=0)
    return {
        name: {
            "f1": round(float(point[k]), 4),
            "f1_low": round(float(f1_lo[k]), 4),
            "f1_high": round(float(f1_hi[k]), 4),
            "delta_points": round(float((point[k] - point[ref]) * 100), 2),
            "delta_low": round(float(d_lo[k]), 2),
            "delta_high": round(float(d_hi[k]), 2),
        }
        for k, name in enumerate(names)
    }


def uncertainty(
    test: Mapping[str, np.ndarray],
    heldout: Mapping[str, np.ndarray],
    reference: str,
    tolerance_points: float,
    decided_on: str,
    seed: int,
    resamples: int = RESAMPLES,
) -> dict[str, Any]:
    """The build record's ``uncertainty``: intervals on the test split (every variant) and on the held-out data
    the gate decides on (``heldout``: the variants scored on it, e.g. valid + test pooled), and their cost."""
    t0 = time.perf_counter()
    on_test = paired_bootstrap(test, reference, resamples, seed)
    t1 = time.perf_counter()
    on_heldout = paired_bootstrap(heldout, reference, resamples, seed)
    seconds = time.perf_counter() - t0
    return {
        "method": METHOD,
        "resamples": resamples,
        "seed": seed,
        "confidence": CONFIDENCE,
        "tolerance_points": tolerance_points,
        "decided_on": decided_on,
        "test_sentences": int(next(iter(test.values())).shape[0]),
        "heldout_sentences": int(next(iter(heldout.values())).shape[0]),
        "test_entities": int(_gold_entities(test[reference])),
        "heldout_entities": int(_gold_entities(heldout[reference])),
        "seconds": round(seconds, 3),  # both bootstraps
        "seconds_test": round(t1 - t0, 3),  # the test split's alone
        "test": on_test,
        "heldout": on_heldout,
    }


def _gold_entities(counts: np.ndarray) -> int:
    """Gold entities = true positives + false negatives."""
    return int(counts[:, 0].sum() + counts[:, 2].sum())


def half_width(row: Mapping[str, float]) -> float:
    """Half the width of a variant's difference interval, in F1 points."""
    return (row["delta_high"] - row["delta_low"]) / 2
