"""The logic of the tokenizer and postprocess steps, on numpy arrays, testable without Triton.

The BERT step is :mod:`ner_triton.runtime.bert`. The adapters (:mod:`ner_triton.runtime.adapters`) are thin
wrappers around these classes. The pre/post steps need only numpy and tokenizers (the NGC server image has
no ONNX Runtime: there the BERT step is Triton's own backend). Each step
raises :class:`~ner_triton.errors.InvalidInputError` for a bad request; the adapter turns it into
an error response for that request only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ner_triton.alignment import Window, encode_windows, window_starts
from ner_triton.decoding import best_labels, entities_from_labels
from ner_triton.errors import BudgetExceededError, InvalidInputError
from ner_triton.labels import LabelMap
from ner_triton.runtime.limits import Limits
from ner_triton.runtime.tokenizer import TokenizerFile
from ner_triton.schema import (
    ATTENTION_MASK,
    CASING_IDS,
    INPUT_IDS,
    LOGITS,
    OFFSETS,
    OWNED,
    TEXT_INDEX,
    WORD_IDS,
)

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # Unicode category Cc less tab, LF, CR


def check_sizes(raw: np.ndarray, limits: Limits) -> None:
    """The checks that cost nothing: dtype, shape, text count and bytes (one text and the whole request)."""
    if raw.dtype != np.object_:
        raise InvalidInputError(f"TEXT must be a BYTES (string) tensor, got dtype {raw.dtype}.")
    if raw.ndim != 1:
        raise InvalidInputError(f"TEXT must have shape [n] (one string per text), got shape {list(raw.shape)}.")
    if raw.shape[0] == 0:
        raise InvalidInputError("TEXT is empty: send at least one text.")
    if raw.shape[0] > limits.max_texts:
        raise InvalidInputError(
            f"{raw.shape[0]} texts in one request; the limit is {limits.max_texts}: split them over several requests."
        )
    sizes = [len(item) if isinstance(item, bytes) else len(str(item).encode("utf-8")) for item in raw]
    total = sum(sizes)
    if total > limits.max_request_bytes:
        raise BudgetExceededError(
            f"over budget: the request's {len(sizes)} texts hold {total} bytes; one request may hold "
            f"{limits.max_request_bytes} (max_request_bytes): send fewer texts per request (NerClient splits lists "
            "of texts for you) or split the document."
        )
    for i, size in enumerate(sizes):
        if size > limits.max_text_bytes:
            raise BudgetExceededError(
                f"over budget: text {i} is {size} bytes; a text may hold {limits.max_text_bytes} "
                "(max_text_bytes): split the document."
            )


def decode_texts(raw: np.ndarray, limits: Limits) -> list[str]:
    """Validate a TEXT tensor (bytes objects) and decode it: one clear error per problem."""
    check_sizes(raw, limits)
    texts = []
    for i, item in enumerate(raw):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"text {i} is not valid UTF-8 ({exc.reason} at byte {exc.start}): encode text as UTF-8."
            ) from exc
        if not text.strip():
            raise InvalidInputError(f"text {i} is empty or whitespace only: send text with at least one word.")
        bad = _CONTROL.search(text)
        if bad is not None:
            raise InvalidInputError(
                f"text {i} holds control character U+{ord(bad.group()):04X} at index {bad.start()}: remove it."
            )
        texts.append(text)
    return texts


class Preprocessor:
    """TEXT -> windows of token ids, attention mask, casing ids, plus what postprocess needs."""

    def __init__(self, tokenizer_dir: Path, limits: Limits) -> None:
        self.tokenizer = TokenizerFile(tokenizer_dir)
        self.limits = limits

    def __call__(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        return self.encode(decode_texts(raw, self.limits))

    def encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Windows of already validated texts (:func:`decode_texts`), all in one set of tensors (``TEXT_INDEX``
        says which text each window belongs to); the request's budget is checked (:meth:`windows`)."""
        per_text = self.windows(texts)
        return self.tensors([w for ws in per_text for w in ws], [i for i, ws in enumerate(per_text) for _ in ws])

    def encode_each(self, texts: list[str]) -> list[dict[str, np.ndarray]]:
        """Like :meth:`encode`, one set of tensors per text (``TEXT_INDEX`` all 0), so a batching step can group
        the windows of many texts by length; the budget is still the whole request's."""
        return [self.tensors(ws, [0] * len(ws)) for ws in self.windows(texts)]

    def windows(self, texts: list[str]) -> list[list[Window]]:
        """Each text's windows; raises :class:`BudgetExceededError` as soon as the request's windows or
        sub-tokens go over :class:`Limits` (its tokenizing stops there)."""
        out: list[list[Window]] = []
        count = tokens = 0
        length, stride = self.limits.max_length, self.limits.stride
        for text in texts:
            plain = self.tokenizer.encode_plain(text)
            n = len(plain.input_ids)
            starts = window_starts(n, length, stride)
            count += len(starts)
            tokens += len(starts) * (min(n, length - 2) + 2)
            self.limits.check_request(count, tokens)  # before the windows are built: a refusal costs little
            out.append(encode_windows(self.tokenizer, text, length, stride, plain))
        return out

    def tensors(self, windows: list[Window], index: list[int]) -> dict[str, np.ndarray]:
        """Padded tensors of ``windows``; ``index[r]`` is the text window ``r`` belongs to."""
        n, length = len(windows), self.limits.padded_length(max(len(w.encoding) for w in windows))
        out = {
            INPUT_IDS: np.zeros((n, length), np.int64),
            ATTENTION_MASK: np.zeros((n, length), np.int64),
            CASING_IDS: np.zeros((n, length), np.int64),
            OFFSETS: np.zeros((n, length, 2), np.int64),
            WORD_IDS: np.full((n, length), -1, np.int64),
            OWNED: np.zeros((n, length), np.bool_),
            TEXT_INDEX: np.array(index, np.int64),
        }
        for r, w in enumerate(windows):
            e, k = w.encoding, len(w.encoding)
            out[INPUT_IDS][r, :k] = e.input_ids
            out[ATTENTION_MASK][r, :k] = 1
            out[CASING_IDS][r, :k] = e.casing_ids
            out[OFFSETS][r, :k] = e.offsets
            out[WORD_IDS][r, :k] = [-1 if x is None else x for x in e.word_ids]
            out[OWNED][r, :k] = w.owned
        return out


class Postprocessor:
    """Logits of all windows of a request -> one JSON array of entities per text."""

    def __init__(self, labels: LabelMap) -> None:
        self.labels = labels

    def __call__(self, raw: np.ndarray, tensors: dict[str, np.ndarray]) -> np.ndarray:
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in raw.reshape(-1)]
        best, scores = best_labels(tensors[LOGITS])  # once for every window of the request
        index = tensors[TEXT_INDEX]
        out = np.empty(len(texts), dtype=np.object_)
        for i, text in enumerate(texts):
            rows = np.flatnonzero(index == i)
            window = {n: tensors[n][rows] for n in (OFFSETS, WORD_IDS, OWNED)}
            out[i] = self.text_json(text, best[rows], scores[rows], window)
        return out

    def text_json(self, text: str, best: np.ndarray, scores: np.ndarray, tensors: dict[str, np.ndarray]) -> bytes:
        """One text's entities as a JSON array, from its windows' label ids and probabilities
        (:func:`~ner_triton.decoding.best_labels`) and their ``OFFSETS`` / ``WORD_IDS`` / ``OWNED`` rows."""
        mask = tensors[OWNED].astype(bool)
        ents = entities_from_labels(
            text,
            best[mask],
            scores[mask],
            tensors[OFFSETS][mask].tolist(),
            [None if w < 0 else w for w in tensors[WORD_IDS][mask].tolist()],
            self.labels,
        )
        return json.dumps([e.as_dict() for e in ents]).encode("utf-8")
