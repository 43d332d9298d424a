"""The documents mode on a real tritonserver: a document's sentences sent as one text come back per sentence,
with exact offsets, the same entities and F1 as the in-process document mode the build reports, from the one-step
``ner`` and a three-step ensemble alike."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ner_triton.bench.served_eval import evaluate_served
from ner_triton.client import AsyncNerClient, NerClient
from ner_triton.data import documents_of, load_split
from ner_triton.documents import PIECE_BYTES, Documents
from ner_triton.labels import LabelMap
from ner_triton.pipeline.evaluate import Predictor, evaluate_documents, onnx_predictor, served_entities
from ner_triton.schema import LABELS_FILE, ONNX_MODEL_FILE, PREPROCESS, TOKENIZER_DIR
from ner_triton.serving.server import ServerSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Each served model and the directory of the ONNX file it runs (the fused ner's own, or the ensemble's BERT step)
SERVED = {"ner": "ner", "ner_fp32": "ner_bert_fp32"}


def _in_process(repository: Path, model: str) -> tuple[Predictor, Path, LabelMap]:
    """The predictor, tokenizer directory and labels of what ``model`` serves."""
    onnx = repository / SERVED[model] / "1" / ONNX_MODEL_FILE
    tokenizer = repository / PREPROCESS / "1" / TOKENIZER_DIR
    return onnx_predictor(onnx, 1), tokenizer, LabelMap.load(repository / "ner" / "1" / LABELS_FILE)


@pytest.mark.parametrize("model", list(SERVED))
def test_served_documents_give_the_in_process_entities_per_sentence(
    server: ServerSettings, repository: Path, conll_dir: Path, model: str
) -> None:
    documents = [[s.text for s in doc] for doc in documents_of(load_split(str(conll_dir), "test"))]
    assert len(documents) == 2 and all(len(d) == 4 for d in documents), "the fixture's two test documents"
    # small pieces too: a document cut in several texts still maps back sentence by sentence
    for piece_bytes in (PIECE_BYTES, 60):
        with NerClient(server.grpc_url, model=model) as client:
            served = client.extract_documents(documents, piece_bytes)
        docs = Documents.of(documents, piece_bytes)
        assert (len(docs.texts) > len(documents)) == (piece_bytes == 60)
        expected = docs.entities(served_entities(*_in_process(repository, model), docs.texts))
        assert [len(d) for d in served] == [len(d) for d in documents], "one entity list per sentence"
        for got_doc, want_doc, sentences in zip(served, expected, documents, strict=True):
            for got, want, sentence in zip(got_doc, want_doc, sentences, strict=True):
                assert [(e.entity, e.start, e.end, e.word) for e in got] == [
                    (e.entity, e.start, e.end, e.word) for e in want
                ]
                assert all(abs(a.score - b.score) < 1e-3 for a, b in zip(got, want, strict=True))
                assert all(sentence[e.start : e.end] == e.word for e in got)


@pytest.mark.parametrize("model", list(SERVED))
def test_document_f1_through_the_server_equals_the_in_process_document_f1(
    server: ServerSettings, repository: Path, conll_dir: Path, model: str
) -> None:
    test = load_split(str(conll_dir), "test")
    served = evaluate_served(server.grpc_url, test, model=model, concurrency=4, mode="document")
    predictor, tokenizer_dir, labels = _in_process(repository, model)
    in_process = evaluate_documents(predictor, test, tokenizer_dir, labels)
    assert served["mode"] == "document" and served["requests"] == 2, "one request per document"
    assert served["sentences"] == len(test) == 8
    assert abs(served["f1"] - in_process.f1) <= 0.001, (served, in_process)


def test_blank_sentences_and_no_documents_cost_no_request(server: ServerSettings) -> None:
    with NerClient(server.grpc_url) as client:
        assert client.extract_documents([]) == []
        assert client.extract_documents([["", "   "]]) == [[[], []]]
        (doc,) = client.extract_documents([["", "Maria Lindqvist", "  "]])
    assert len(doc) == 3 and doc[0] == [] and doc[2] == []


def test_async_documents_equal_sync(server: ServerSettings) -> None:
    documents = [["ACME rejects Danish plan .", "Maria Lindqvist"], ["OSLO 2024-03-14"]]

    async def run() -> list[list[list[tuple[str, int, int]]]]:
        async with AsyncNerClient(server.grpc_url) as client:
            found = await client.extract_documents(documents)
        return [[[(e.entity, e.start, e.end) for e in s] for s in d] for d in found]

    with NerClient(server.grpc_url) as client:
        sync = [[[(e.entity, e.start, e.end) for e in s] for s in d] for d in client.extract_documents(documents)]
    assert asyncio.run(run()) == sync


def test_cli_documents_mode_prints_one_item_per_sentence(server: ServerSettings) -> None:
    stdin = "ACME rejects Danish plan .\nMaria Lindqvist\n\n\nOSLO 2024-03-14\n"
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ner-client"), "--url", server.grpc_url, "--documents", "--json"],
        input=stdin, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    items = json.loads(proc.stdout)
    assert [i["text"] for i in items] == ["ACME rejects Danish plan .", "Maria Lindqvist", "OSLO 2024-03-14"]
    assert all(i["text"][e["start"] : e["end"]] == e["word"] for i in items for e in i["entities"])
