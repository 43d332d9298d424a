"""Logits -> BIO tags -> entity spans with character offsets into the original text.

Only the first sub-token of each word is read (the rule used in training); a word's span runs
from its first sub-token's start to its last sub-token's end. Tags are decoded leniently, like
conlleval: ``I-X`` after ``O`` or after another type starts a new entity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ner_triton.labels import LabelMap


@dataclass(frozen=True)
class Entity:
    """One entity: type, character span ``[start, end)``, its exact surface text and a score."""

    entity: str
    start: int
    end: int
    word: str
    score: float

    def as_dict(self) -> dict[str, Any]:
        # the fields by hand: dataclasses.asdict deep-copies recursively, a measurable cost per entity in the stub
        return {"entity": self.entity, "start": self.start, "end": self.end, "word": self.word, "score": self.score}


def words_from_subtokens(
    offsets: Sequence[tuple[int, int]], word_ids: Sequence[int | None]
) -> list[tuple[int, int, int]]:
    """``(first_position, char_start, char_end)`` of every word, in order."""
    words: list[tuple[int, int, int]] = []
    prev = None
    for pos, (w, (s, e)) in enumerate(zip(word_ids, offsets, strict=True)):
        if w is None:
            continue
        if w != prev:
            words.append((pos, s, e))
        else:
            first, start, _ = words[-1]
            words[-1] = (first, start, max(e, words[-1][2]))
        prev = w
    return words


def best_labels(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The most likely label of every position of ``logits`` ``[..., labels]`` and its probability (softmax over
    the last axis, float32): one call for a whole ONNX Runtime run instead of one per text."""
    z = logits.astype(np.float32)
    best = z.argmax(-1)
    # the best label's probability is exp(0) / sum(exp(z - max)): no full softmax, no gather (per-request cost)
    z -= z.max(axis=-1, keepdims=True)
    return best, np.float32(1.0) / np.exp(z).sum(axis=-1)


def decode_entities(
    text: str,
    logits: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    labels: LabelMap,
) -> list[Entity]:
    """Entities of one text from per-sub-token ``logits`` ``[tokens, labels]`` and their offsets."""
    best, scores = best_labels(logits)
    return entities_from_labels(text, best, scores, offsets, word_ids, labels)


def entities_from_labels(
    text: str,
    best: np.ndarray,
    scores: np.ndarray,
    offsets: Sequence[tuple[int, int]],
    word_ids: Sequence[int | None],
    labels: LabelMap,
) -> list[Entity]:
    """:func:`decode_entities` from :func:`best_labels`' label ids and probabilities ``[tokens]``."""
    tags = [labels.labels[k] for k in best.tolist()]
    probs = scores.tolist()
    entities: list[Entity] = []
    current: list[Any] | None = None  # [type, start, end, scores]

    def close() -> None:
        if current is not None:
            etype, start, end, seen = current
            entities.append(Entity(etype, start, end, text[start:end], round(float(np.mean(seen)), 4)))

    for pos, start, end in words_from_subtokens(offsets, word_ids):
        tag = tags[pos]
        score = probs[pos]
        if tag == "O":
            close()
            current = None
            continue
        prefix, etype = tag.split("-", 1)
        if prefix == "I" and current is not None and current[0] == etype:
            current[2] = end
            current[3].append(score)
        else:
            close()
            current = [etype, start, end, [score]]
    close()
    return entities


def spans_to_token_tags(
    entities: Sequence[Entity], token_starts: Sequence[int], token_ends: Sequence[int]
) -> list[str]:
    """IOB2 tags of gold tokens from predicted character spans (for scoring served output)."""
    tags = ["O"] * len(token_starts)
    for ent in entities:
        inside = [
            i for i, (s, e) in enumerate(zip(token_starts, token_ends, strict=True)) if s < ent.end and e > ent.start
        ]
        for k, i in enumerate(inside):
            tags[i] = ("B-" if k == 0 else "I-") + ent.entity
    return tags
