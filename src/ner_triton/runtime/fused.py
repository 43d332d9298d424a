"""The whole NER pipeline in one step: TEXT -> windows -> ONNX Runtime -> entities, over a dynamic batch.

On a CPU host every hand-over between Triton and a python-backend stub costs a copy through shared memory
and a wake-up of another process; the three-step ensemble pays three of them per request, plus the
ensemble scheduler. :class:`FusedNer` composes the very same steps (:class:`~ner_triton.runtime.steps.Preprocessor`,
:class:`~ner_triton.runtime.bert.BertRunner`, :class:`~ner_triton.runtime.steps.Postprocessor`) inside one
python model with dynamic batching: the windows of every text of every request in a batch are grouped by
length and run together, then decoded per text. The local CPU server serves it as ``ner``; the three-step
ensembles (``ner_<variant>``) stay for the layouts whose BERT step is a C++ backend (NGC, TensorRT).

A version directory of this model holds ``model.onnx`` (the build's chosen CPU variant), ``tokenizer/``,
``labels.json`` and ``served.json`` (which variant it is and why; :mod:`ner_triton.repository.install`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ner_triton.errors import InvalidInputError
from ner_triton.labels import LabelMap
from ner_triton.runtime.bert import BertRunner
from ner_triton.runtime.limits import Limits
from ner_triton.runtime.steps import Postprocessor, Preprocessor, decode_texts
from ner_triton.schema import LABELS_FILE, LOGITS, OFFSETS, ONNX_MODEL_FILE, OWNED, TEXT_INDEX, TOKENIZER_DIR, WORD_IDS

POST_TENSORS = (OFFSETS, WORD_IDS, OWNED)
WARMUP_TEXT = "Warm-up sentence from Paris ."


@dataclass
class _Text:
    """One text of a request on its way through the steps."""

    request: int
    raw: np.ndarray  # [1] bytes
    tensors: dict[str, np.ndarray]


class FusedNer:
    """Tokenize, run and decode the texts of many requests at once; one result (or error) per request."""

    def __init__(
        self,
        version_dir: Path,
        limits: Limits,
        threads: int,
        max_padding: float = 0.25,
        spinning: bool = True,
    ) -> None:
        self.limits = limits
        self.pre = Preprocessor(version_dir / TOKENIZER_DIR, limits)
        self.bert = BertRunner(version_dir / ONNX_MODEL_FILE, threads, max_padding, spinning)
        self.post = Postprocessor(LabelMap.load(version_dir / LABELS_FILE))
        self([np.array([WARMUP_TEXT.encode()], dtype=np.object_)])  # first-run allocations before traffic

    def __call__(self, requests: Sequence[np.ndarray]) -> list[np.ndarray | InvalidInputError]:
        """``requests[i]`` is a TEXT tensor (``[n]`` or ``[n, 1]`` bytes); returns ENTITIES of the same shape
        (one JSON array per text) or the :class:`InvalidInputError` that request gets."""
        out: list[np.ndarray | InvalidInputError] = [InvalidInputError("not run")] * len(requests)
        texts: list[_Text] = []
        for r, raw in enumerate(requests):
            try:
                flat = raw.reshape(-1) if raw.dtype == np.object_ else raw
                decoded = decode_texts(flat, self.limits)  # the request's checks: count, size, UTF-8, controls
                texts += [_Text(r, flat[i : i + 1], self.pre.encode([t])) for i, t in enumerate(decoded)]
            except InvalidInputError as exc:
                out[r] = exc
                texts = [t for t in texts if t.request != r]
        feeds = [{n: t.tensors[n] for n in self.bert.input_names} for t in texts]
        entities: dict[int, list[bytes]] = {}
        for t, logits in zip(texts, self.bert.run(feeds), strict=True):
            tensors = {LOGITS: logits, TEXT_INDEX: t.tensors[TEXT_INDEX], **{n: t.tensors[n] for n in POST_TENSORS}}
            entities.setdefault(t.request, []).append(self.post(t.raw, tensors)[0])
        for r, items in entities.items():
            out[r] = np.array(items, dtype=np.object_).reshape(requests[r].shape)
        return out
