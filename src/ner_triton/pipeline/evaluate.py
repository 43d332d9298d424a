"""Entity-level evaluation (seqeval, conlleval-compatible default mode) and in-process latency.

The same code evaluates every artifact: PyTorch, ONNX FP32 and the INT8 variants all go through a
``Predictor`` (padded batch of numpy arrays in, logits out).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ner_triton.alignment import (
    Encoding,
    covered_chars,
    encode_in_context,
    encode_texts,
    pad_batch,
    word_tags_to_token_tags,
)
from ner_triton.data import Sentence, documents_of
from ner_triton.decoding import Entity, spans_to_token_tags
from ner_triton.documents import PIECE_BYTES, Documents
from ner_triton.labels import LabelMap
from ner_triton.runtime.limits import Limits
from ner_triton.runtime.session import onnx_session
from ner_triton.runtime.steps import Postprocessor, Preprocessor
from ner_triton.schema import ATTENTION_MASK, CASING_IDS, INPUT_IDS, LOGITS

log = logging.getLogger(__name__)

Predictor = Callable[[dict[str, np.ndarray]], np.ndarray]


def torch_predictor(model: Any) -> Predictor:
    """Run a :class:`~ner_triton.modeling.NerModel` (eval mode, no grad) on padded numpy batches."""
    import torch

    model.eval()

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            feed = {k: torch.from_numpy(v) for k, v in batch.items()}
            if not model.use_casing:
                feed.pop(CASING_IDS, None)
            return model(**feed).float().numpy()  # type: ignore[no-any-return]

    return run


def onnx_predictor(path: Path, threads: int) -> Predictor:
    """Run an ONNX model with ONNX Runtime (CPU); feeds only the inputs the graph declares."""
    session = onnx_session(path, threads)
    names = [i.name for i in session.get_inputs()]

    def run(batch: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(None, {n: batch[n] for n in names})[0]  # type: ignore[no-any-return]

    return run


def encode_sentences(
    tokenizer: Any, sentences: Sequence[Sentence], max_length: int, context: int = 0
) -> list[Encoding]:
    """The model inputs of ``sentences``: alone (``context=0``, or data without documents), or each between up to
    ``context`` sub-tokens of its document's neighbours (:func:`~ner_triton.alignment.encode_in_context`)."""
    texts = [s.text for s in sentences]
    if not context or not any(s.in_document for s in sentences):
        return encode_texts(tokenizer, texts, max_length)
    lefts, rights = [" ".join(s.left) for s in sentences], [" ".join(s.right) for s in sentences]
    return encode_in_context(tokenizer, texts, lefts, rights, max_length, context)


def predict_subtoken_tags(
    predictor: Predictor,
    encodings: Sequence[Encoding],
    labels: LabelMap,
    batch_size: int,
    desc: str = "predict",
) -> list[list[str]]:
    """Argmax tag of every sub-token of every encoding (batches sorted by length for speed)."""
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i]))
    out: list[list[str]] = [[] for _ in encodings]
    id2label = labels.labels
    for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", leave=False):
        idx = order[start : start + batch_size]
        logits = predictor(pad_batch([encodings[i] for i in idx]))
        best = logits.argmax(-1)
        for row, i in enumerate(idx):
            out[i] = [id2label[j] for j in best[row, : len(encodings[i])]]
    return out


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class EvalResult:
    """Micro-averaged entity scores plus one row per entity type."""

    micro: Scores
    per_type: dict[str, Scores] = field(default_factory=dict)
    sentences: int = 0
    # The predicted IOB2 tags of every sentence (for the bootstrap's per-sentence counts); not in as_dict
    predictions: tuple[tuple[str, ...], ...] = field(default=(), compare=False, repr=False)

    @property
    def f1(self) -> float:
        return self.micro.f1

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.micro),
            "sentences": self.sentences,
            "per_type": {k: asdict(v) for k, v in self.per_type.items()},
        }


def score_tags(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> EvalResult:
    """seqeval entity-level scores (default, conlleval-compatible mode) of IOB2 tag sequences."""
    from seqeval.metrics import classification_report

    report = classification_report([list(g) for g in gold], [list(p) for p in pred], output_dict=True, zero_division=0)
    micro = report.pop("micro avg")
    for key in ("macro avg", "weighted avg"):
        report.pop(key, None)

    def scores(row: dict[str, Any]) -> Scores:
        return Scores(
            round(float(row["precision"]), 4),
            round(float(row["recall"]), 4),
            round(float(row["f1-score"]), 4),
            int(row["support"]),
        )

    return EvalResult(scores(micro), {k: scores(v) for k, v in sorted(report.items())}, len(gold))


def evaluate(
    predictor: Predictor,
    sentences: Sequence[Sentence],
    tokenizer: Any,
    labels: LabelMap,
    batch_size: int = 32,
    max_length: int = 512,
    desc: str = "evaluate",
    context: int = 0,
) -> EvalResult:
    """Entity P/R/F1 of ``predictor`` on gold ``sentences`` (each sentence's text = tokens joined by spaces).

    ``context``: the sentence mode (0) or the document mode - each sentence read between up to ``context``
    sub-tokens of its document's neighbouring sentences (:func:`encode_sentences`); scored on the sentence alone
    either way."""
    encodings = encode_sentences(tokenizer, sentences, max_length, context)
    truncated = sum(1 for e, s in zip(encodings, sentences, strict=True) if covered_chars(e) < len(s.text))
    if truncated:
        log.warning("%d sentences were longer than %d sub-tokens and were truncated", truncated, max_length)
    sub_tags = predict_subtoken_tags(predictor, encodings, labels, batch_size, desc=desc)
    pred = [
        word_tags_to_token_tags(e, t, s.token_starts()) for e, t, s in zip(encodings, sub_tags, sentences, strict=True)
    ]
    return replace(score_tags([s.tags for s in sentences], pred), predictions=tuple(tuple(p) for p in pred))


def sentence_tags(sentence: Sentence, entities: Sequence[Entity]) -> list[str]:
    """IOB2 tags of ``sentence``'s gold tokens from entity spans into its text (how served output is scored)."""
    starts = sentence.token_starts()
    return spans_to_token_tags(entities, starts, [a + len(t) for a, t in zip(starts, sentence.tokens, strict=True)])


def served_entities(
    predictor: Predictor, tokenizer_dir: Path, labels: LabelMap, texts: Sequence[str], limits: Limits | None = None,
    desc: str = "documents",
) -> list[list[Entity]]:  # fmt: skip
    """Entities of each text the way the server finds them, in process: the serving steps' windows
    (:class:`~ner_triton.runtime.steps.Preprocessor`, ``max_length`` / ``stride`` of ``limits``) through
    ``predictor``, decoded by the postprocess step; one text per run."""
    pre, post = Preprocessor(tokenizer_dir, limits or Limits()), Postprocessor(labels)
    out = []
    for text in tqdm(texts, desc=desc, unit="text", leave=False):
        tensors = pre.encode([text])
        tensors[LOGITS] = predictor({k: tensors[k] for k in (INPUT_IDS, ATTENTION_MASK, CASING_IDS)})
        (found,) = post(np.array([text.encode("utf-8")], dtype=np.object_), tensors)
        out.append([Entity(**e) for e in json.loads(found)])
    return out


def evaluate_documents(
    predictor: Predictor,
    sentences: Sequence[Sentence],
    tokenizer_dir: Path,
    labels: LabelMap,
    limits: Limits | None = None,
    desc: str = "evaluate documents",
) -> EvalResult:
    """Entity P/R/F1 of the document mode as served: each document's sentences sent as one text (pieces of
    :data:`~ner_triton.documents.PIECE_BYTES`, as the client cuts them), windowed and decoded by the serving steps
    (:func:`served_entities`), the entities mapped back to each sentence and scored on it. Sentences of data
    without document markers are each a document of their own (the sentence mode, decoded as served)."""
    groups = documents_of(sentences)
    docs = Documents.of([[s.text for s in group] for group in groups], PIECE_BYTES)
    found = docs.entities(served_entities(predictor, tokenizer_dir, labels, docs.texts, limits, desc))
    pred = [sentence_tags(s, ents) for group, doc in zip(groups, found, strict=True)
            for s, ents in zip(group, doc, strict=True)]  # fmt: skip
    return replace(score_tags([s.tags for s in sentences], pred), predictions=tuple(tuple(p) for p in pred))


@dataclass(frozen=True)
class Latency:
    """In-process latency of tokenize + run for one batch size."""

    batch_size: int
    ms_per_batch_p50: float
    ms_per_batch_p95: float
    sentences_per_s: float


def measure_latency(
    predictor: Predictor,
    tokenizer: Any,
    texts: Sequence[str],
    batch_size: int,
    max_length: int = 512,
    min_batches: int = 20,
    warmup: int = 3,
) -> Latency:
    """Time tokenize + pad + run over consecutive batches of ``texts`` (cycled to ``min_batches``)."""
    batches = [list(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches
    while len(batches) < min_batches + warmup:
        batches = batches + batches
    times = []
    n_sent = 0
    for k, batch in enumerate(batches[: min_batches + warmup]):
        t0 = time.perf_counter()
        predictor(pad_batch(encode_texts(tokenizer, batch, max_length)))
        dt = time.perf_counter() - t0
        if k >= warmup:
            times.append(dt)
            n_sent += len(batch)
    arr = np.array(times) * 1000.0
    return Latency(
        batch_size,
        round(float(np.percentile(arr, 50)), 2),
        round(float(np.percentile(arr, 95)), 2),
        round(n_sent / float(np.sum(times)), 1),
    )
