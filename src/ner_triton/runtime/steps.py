"""The logic of the three python-backend steps, on numpy arrays, testable without Triton.

The adapters (:mod:`ner_triton.runtime.adapters`) are thin wrappers around these classes. Each step
raises :class:`~ner_triton.errors.InvalidInputError` for a bad request; the adapter turns it into
an error response for that request only.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ner_triton.alignment import encode_windows
from ner_triton.decoding import decode_entities
from ner_triton.errors import InvalidInputError
from ner_triton.labels import LabelMap
from ner_triton.runtime.graph import lookup_table_rows
from ner_triton.runtime.limits import Limits
from ner_triton.runtime.session import onnx_session
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

_ALLOWED_CONTROL = {"\t", "\n", "\r"}


def decode_texts(raw: np.ndarray, limits: Limits) -> list[str]:
    """Validate a TEXT tensor (bytes objects) and decode it: one clear error per problem."""
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
    texts = []
    for i, item in enumerate(raw):
        data = item if isinstance(item, bytes) else str(item).encode("utf-8")
        if len(data) > limits.max_text_bytes:
            raise InvalidInputError(
                f"text {i} is {len(data)} bytes; the limit is {limits.max_text_bytes}: split the document."
            )
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"text {i} is not valid UTF-8 ({exc.reason} at byte {exc.start}): encode text as UTF-8."
            ) from exc
        if not text.strip():
            raise InvalidInputError(f"text {i} is empty or whitespace only: send text with at least one word.")
        bad = next((c for c in text if unicodedata.category(c) == "Cc" and c not in _ALLOWED_CONTROL), None)
        if bad is not None:
            raise InvalidInputError(
                f"text {i} holds control character U+{ord(bad):04X} at index {text.index(bad)}: remove it."
            )
        texts.append(text)
    return texts


class Preprocessor:
    """TEXT -> windows of token ids, attention mask, casing ids, plus what postprocess needs."""

    def __init__(self, tokenizer_dir: Path, limits: Limits) -> None:
        self.tokenizer = TokenizerFile(tokenizer_dir)
        self.limits = limits

    def __call__(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        texts = decode_texts(raw, self.limits)
        windows, index = [], []
        for i, text in enumerate(texts):
            for w in encode_windows(self.tokenizer, text, self.limits.max_length, self.limits.stride):
                windows.append(w)
                index.append(i)
        if len(windows) > self.limits.max_windows:
            raise InvalidInputError(
                f"the request's texts make {len(windows)} windows of {self.limits.max_length} tokens; the limit is "
                f"{self.limits.max_windows}: send fewer or shorter texts per request."
            )
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


class BertRunner:
    """ONNX Runtime over the requests of one dynamic batch: grouped by length (:func:`length_groups`),
    each group padded to its longest and run once, logits split back per request."""

    def __init__(self, onnx_path: Path, threads: int, max_padding: float = 0.25, spinning: bool = True) -> None:
        self.session = onnx_session(onnx_path, threads, spinning)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.table_rows = lookup_table_rows(onnx_path, self.input_names)
        self.max_padding = max_padding

    def validate(self, feed: dict[str, np.ndarray]) -> None:
        shapes = {n: feed[n].shape for n in self.input_names}
        first = feed[self.input_names[0]]
        for name in self.input_names:
            arr = feed[name]
            if arr.dtype != np.int64:
                raise InvalidInputError(f"{name} must be INT64, got {arr.dtype}.")
            if arr.ndim != 2 or arr.shape != first.shape:
                raise InvalidInputError(f"inputs must all have shape [batch, sequence]; got {shapes}.")
            if name == ATTENTION_MASK and arr.size and (arr.min() < 0 or arr.max() > 1):
                raise InvalidInputError(f"{ATTENTION_MASK} must hold only 0 and 1.")
            rows = self.table_rows.get(name)
            if rows is not None and arr.size and (arr.min() < 0 or arr.max() >= rows):
                raise InvalidInputError(
                    f"{name} holds values outside [0, {rows}) (min {arr.min()}, max {arr.max()}): "
                    "send ids from this model's tokenizer (ner_preprocess does)."
                )

    def run(self, feeds: Sequence[dict[str, np.ndarray]]) -> list[np.ndarray]:
        """Logits ``[rows_i, len_i, labels]`` for each feed of ``[rows_i, len_i]`` arrays."""
        out: list[np.ndarray] = [np.empty(0)] * len(feeds)
        for group in length_groups([f[self.input_names[0]].shape for f in feeds], self.max_padding):
            length = max(feeds[i][self.input_names[0]].shape[1] for i in group)
            batch = {
                n: np.concatenate([np.pad(feeds[i][n], ((0, 0), (0, length - feeds[i][n].shape[1]))) for i in group])
                for n in self.input_names
            }
            logits = self.session.run([LOGITS], batch)[0]
            row = 0
            for i in group:
                rows, k = feeds[i][self.input_names[0]].shape
                out[i] = np.ascontiguousarray(logits[row : row + rows, :k])
                row += rows
        return out


def length_groups(shapes: Sequence[tuple[int, ...]], max_padding: float) -> list[list[int]]:
    """Split requests (``[rows, length]`` shapes) into runs of similar length.

    On a CPU every padded token costs as much as a real one, and a dynamic batch of sentences of
    random length padded to its longest wastes most of its compute. Requests are sorted by length
    and a run is closed when padding it to its longest would add more than ``max_padding`` (a
    fraction) to its real tokens. ``max_padding=inf`` gives one run (plain padding).
    """
    order = sorted(range(len(shapes)), key=lambda i: shapes[i][1])
    groups: list[list[int]] = []
    real = rows = 0
    for i in order:
        r, k = shapes[i][0], shapes[i][1]
        if groups and (rows + r) * k <= (1 + max_padding) * (real + r * k):
            groups[-1].append(i)
            real, rows = real + r * k, rows + r
        else:
            groups.append([i])
            real, rows = r * k, r
    return groups


class Postprocessor:
    """Logits of all windows of a request -> one JSON array of entities per text."""

    def __init__(self, labels: LabelMap) -> None:
        self.labels = labels

    def __call__(self, raw: np.ndarray, tensors: dict[str, np.ndarray]) -> np.ndarray:
        texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in raw.reshape(-1)]
        logits, offsets, word_ids = tensors[LOGITS], tensors[OFFSETS], tensors[WORD_IDS]
        owned, index = tensors[OWNED].astype(bool), tensors[TEXT_INDEX]
        out = np.empty(len(texts), dtype=np.object_)
        for i, text in enumerate(texts):
            rows = np.flatnonzero(index == i)
            mask = owned[rows]
            ents = decode_entities(
                text,
                logits[rows][mask],
                [tuple(o) for o in offsets[rows][mask].tolist()],
                [None if w < 0 else int(w) for w in word_ids[rows][mask].tolist()],
                self.labels,
            )
            out[i] = json.dumps([e.as_dict() for e in ents]).encode("utf-8")
        return out
