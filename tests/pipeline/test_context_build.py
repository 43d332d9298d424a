"""Document context on a real (tiny) training run and build: data without document markers trains exactly as
without CONTEXT, and a build with CONTEXT scores the test split in both modes and gates on the document mode."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from ner_triton.pipeline.build import build
from ner_triton.pipeline.finetune import TRAIN_SUMMARY, finetune
from ner_triton.record import BuildReport
from support import tiny_settings

pytestmark = pytest.mark.slow


def _weights(model_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(model_dir.glob("*.safetensors")))


def test_data_without_documents_trains_exactly_as_without_context(
    tiny_model_dir: Path, conll_dir: Path, tmp_path: Path
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    for f in conll_dir.iterdir():  # the same sentences, no -DOCSTART- lines: no documents
        lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
        (plain / f.name).write_text("".join(x for x in lines if not x.startswith("-DOCSTART-")), encoding="utf-8")
    settings = tiny_settings(tiny_model_dir, plain, tmp_path / "a", None, epochs=2)
    with_context = replace(settings, train=replace(settings.train, context_tokens=16))
    a = finetune(settings, plain, tmp_path / "alone")
    b = finetune(with_context, plain, tmp_path / "context")
    assert _weights(a) == _weights(b), "CONTEXT changes nothing where the data marks no documents"
    summary = json.loads((b / TRAIN_SUMMARY).read_text())
    assert summary["settings"]["context_tokens"] == 16


def test_a_build_with_context_scores_both_modes(tiny_model_dir: Path, conll_dir: Path, tmp_path: Path) -> None:
    settings = tiny_settings(tiny_model_dir, conll_dir, tmp_path / "artifacts", None, epochs=2)
    settings = replace(settings, train=replace(settings.train, context_tokens=8))
    report = BuildReport.load(build(settings))
    d = report.document_mode
    assert d is not None and d.context_tokens == 8
    assert d.sentences_in_documents == report.test_sentences == 8, "two documents of 4 sentences each"
    onnx = {k for k in report.variants if k.startswith("onnx_")}
    assert set(d.document) == onnx == set(d.document_per_type)
    assert all(d.sentence[k] == report.variants[k].f1 for k in d.sentence)
    assert all(0.0 <= f <= 1.0 for f in d.document.values())
    assert set(d.ms_per_sentence) == {"sentence", "document"} and min(d.ms_per_sentence.values()) > 0
    # such a model is served in the documents mode: the gate decides on that mode's intervals
    assert report.uncertainty is not None and "document mode" in report.uncertainty.decided_on
    assert report.uncertainty.test["onnx_fp32"].f1 == pytest.approx(d.document["onnx_fp32"], abs=5e-4)
    md = (tmp_path / "artifacts" / "report.md").read_text()
    assert "## Document context (trained with CONTEXT=8 sub-tokens per side)" in md and "| onnx_fp32 |" in md
