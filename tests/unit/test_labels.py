from __future__ import annotations

from pathlib import Path

import pytest

from ner_triton.errors import DataError
from ner_triton.labels import LabelMap


def test_labels_come_from_tags_with_partners() -> None:
    labels = LabelMap.from_tags(["O", "B-PER", "I-LOC", "B-LOC", "O"])
    assert labels.labels == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER")
    assert labels.entity_types == ["LOC", "PER"]
    assert labels.encode(["O", "I-PER"]) == [0, 4]
    with pytest.raises(DataError, match="not in the label set"):
        labels.encode(["B-ORG"])


def test_roundtrip_and_bad_files(tmp_path: Path) -> None:
    labels = LabelMap.from_tags(["B-ORG"])
    assert LabelMap.load(labels.save(tmp_path / "labels.json")) == labels
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a label file"):
        LabelMap.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="label file missing"):
        LabelMap.load(tmp_path / "none.json")
    with pytest.raises(DataError, match="must start with 'O'"):
        LabelMap(("B-X", "O"))
