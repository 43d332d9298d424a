"""The label set: derived from the data, saved with the model, read back by every consumer."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ner_triton.errors import DataError


def _sort_key(tag: str) -> tuple[int, str, int]:
    if tag == "O":
        return (0, "", 0)
    prefix, etype = tag.split("-", 1)
    return (1, etype, 0 if prefix == "B" else 1)


@dataclass(frozen=True)
class LabelMap:
    """IOB2 labels in a fixed order: ``O`` first, then ``B-X``/``I-X`` by entity type."""

    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.labels or self.labels[0] != "O":
            raise DataError(f"label set must start with 'O', got {list(self.labels)[:5]}")
        if len(set(self.labels)) != len(self.labels):
            raise DataError(f"label set has duplicates: {list(self.labels)}")

    @classmethod
    def from_tags(cls, tags: Iterable[str]) -> LabelMap:
        """Every tag seen, with the B-/I- partner of each entity type added so decoding is total."""
        types = {t.split("-", 1)[1] for t in tags if t != "O"}
        full = {"O"} | {f"{p}-{t}" for t in types for p in ("B", "I")}
        return cls(tuple(sorted(full, key=_sort_key)))

    @classmethod
    def from_sentences(cls, sentences: Iterable[object]) -> LabelMap:
        return cls.from_tags(tag for s in sentences for tag in s.tags)  # type: ignore[attr-defined]

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def entity_types(self) -> list[str]:
        return sorted({label[2:] for label in self.labels if label != "O"})

    def __len__(self) -> int:
        return len(self.labels)

    def encode(self, tags: Sequence[str]) -> list[int]:
        ids = self.label2id
        try:
            return [ids[t] for t in tags]
        except KeyError as exc:
            raise DataError(f"tag {exc.args[0]!r} is not in the label set {list(self.labels)}") from exc

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps({"labels": list(self.labels)}, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path) -> LabelMap:
        try:
            return cls(tuple(json.loads(path.read_text(encoding="utf-8"))["labels"]))
        except FileNotFoundError as exc:
            raise DataError(f"{path}: label file missing; rebuild the model with `make build`.") from exc
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise DataError(f'{path}: not a label file ({exc}); expected {{"labels": [...]}}.') from exc
