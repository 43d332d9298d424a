"""A model trained on a label set that is not CoNLL's, from two-column BIO files with hyphenated types, serves
its own types through the ensemble and the client, with exact character offsets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ner_triton.client import NerClient
from ner_triton.data import load_split
from ner_triton.pipeline.build import build
from ner_triton.record import BuildReport
from ner_triton.serving.server import ServerSettings, TritonServer
from support import tiny_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = [
    [("Zoë", "B-person"), ("Kowalczyk", "I-person"), ("flew", "O"), ("to", "O"), ("São", "B-geo-loc"),
     ("Paulo", "I-geo-loc"), ("on", "O"), ("2024-03-14", "B-DATE-TIME"), (".", "O")],
    [("ACME", "B-company"), ("released", "O"), ("Widget", "B-creative-work"), ("Pro", "I-creative-work"),
     ("in", "O"), ("Tromsø", "B-geo-loc"), (".", "O")],
    [("The", "O"), ("weather", "O"), ("was", "O"), ("fine", "O"), (".", "O")],
]  # fmt: skip
TYPES = {"person", "geo-loc", "DATE-TIME", "company", "creative-work"}


def _write(path: Path, repeat: int) -> None:
    block = "\n\n".join("\n".join(f"{t}\t{g}" for t, g in s) for s in ROWS)
    path.write_text("\n\n".join([block] * repeat) + "\n", encoding="utf-8")


def test_non_conll_label_set_is_served_with_its_own_types(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _write(data / "train.tsv", 16)
    _write(data / "dev.tsv", 2)
    _write(data / "test.tsv", 2)
    # floor off: a lookup of the repeated training text is perfect
    settings = tiny_settings(tiny_model_dir, data, tmp_path / "artifacts", tmp_path / "repo", epochs=6)
    report = BuildReport.load(build(settings))
    labels = json.loads((tmp_path / "artifacts" / "model" / "labels.json").read_text())["labels"]
    assert {label[2:] for label in labels if label != "O"} == TYPES
    assert set(report.variants["onnx_fp32"].per_type) == TYPES

    texts = [s.text for s in load_split(str(data), "test")[:3]]
    server = ServerSettings.on_free_ports(tmp_path / "repo", tmp_path / "triton")
    with TritonServer(server), NerClient(server.grpc_url) as client:
        served = client.extract(texts)
    found = [e for ents in served for e in ents]
    assert found, "the trained model finds entities in its own training sentences"
    assert {e.entity for e in found} <= TYPES and any("-" in e.entity for e in found), found
    for text, ents in zip(texts, served, strict=True):
        for e in ents:
            assert text[e.start : e.end] == e.word
    # the model memorized its training sentences: the first one's gold entities come back
    gold = {("geo-loc", "São Paulo"), ("person", "Zoë Kowalczyk"), ("DATE-TIME", "2024-03-14")}
    assert gold & {(e.entity, e.word) for e in served[0]}, served[0]
