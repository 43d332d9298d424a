"""The bucket router of the equal-shape layouts: requests of one padded length stacked into one BERT call.

Triton's C++ backends (onnxruntime, TensorRT) take no ragged batches, so the dynamic batcher merges only
requests whose tensors have equal shapes, and it closes a batch at the first queued request of another shape:
with CoNLL-like lengths (four buckets) the BERT step ran 1.7 requests per execution at 64 clients, however
deep the queue. The router (``ner_route_<variant>``, a python model with ragged batching) sits between the
tokenizer step and the BERT step of those layouts. Its own batcher merges requests of any length; it groups
them by padded length, stacks each group into one tensor (at most the BERT step's ``max_batch_size`` rows)
and sends one request per group to the BERT step, all groups at once - so every length bucket gets its own
batch, whatever the order the requests arrived in.

Why one BERT model and not one per bucket: stacking same-length requests makes each call one equal-shape
batch by construction, so a single BERT model (one TensorRT engine with a profile per bucket) serves every
bucket, with one BLS call per bucket and batch rather than one per request, and no extra copy of the weights.

The logic is here, on numpy arrays and testable without Triton; :mod:`ner_triton.runtime.adapters.router`
makes the calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np

from ner_triton.errors import InvalidInputError

Feed = Mapping[str, np.ndarray]


def check_feed(feed: Feed, names: Sequence[str]) -> tuple[int, int]:
    """The ``(rows, length)`` of one request's BERT inputs; :class:`InvalidInputError` naming the input and
    the fix when one is missing, not 2-D, not integer, or shaped unlike the others."""
    shape: tuple[int, ...] | None = None
    for name in names:
        if name not in feed:
            raise InvalidInputError(f"missing input {name}: send {', '.join(names)}.")
        array = feed[name]
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
            raise InvalidInputError(f"{name} must have shape [windows, length] with both > 0, got {list(array.shape)}.")
        if not np.issubdtype(array.dtype, np.integer):
            raise InvalidInputError(f"{name} must be an integer tensor (INT64), got {array.dtype}.")
        if shape is not None and array.shape != shape:
            raise InvalidInputError(
                f"{name} has shape {list(array.shape)} but {names[0]} has {list(shape)}: every input of a request "
                "must have the same shape."
            )
        shape = array.shape
    assert shape is not None
    return int(shape[0]), int(shape[1])


def plan(shapes: Mapping[int, tuple[int, int]], max_rows: int) -> list[list[int]]:
    """The BERT calls for a batch: request keys grouped by length, each group cut into calls of at most
    ``max_rows`` rows (a request is never split; one that alone has more rows is a call of its own). Calls
    come shortest length first, requests in their batch order."""
    by_length: dict[int, list[int]] = defaultdict(list)
    for key, (_rows, length) in shapes.items():
        by_length[length].append(key)
    calls: list[list[int]] = []
    for length in sorted(by_length):
        call: list[int] = []
        rows = 0
        for key in by_length[length]:
            n = shapes[key][0]
            if call and rows + n > max_rows:
                calls.append(call)
                call, rows = [], 0
            call.append(key)
            rows += n
        calls.append(call)
    return calls


def stack(feeds: Sequence[Feed], names: Sequence[str]) -> dict[str, np.ndarray]:
    """One tensor per input name: the requests' rows one after another (all have one length)."""
    return {name: feeds[0][name] if len(feeds) == 1 else np.concatenate([f[name] for f in feeds]) for name in names}


def split(logits: np.ndarray, rows: Sequence[int]) -> list[np.ndarray]:
    """The stacked call's logits cut back into one array per request (``rows[i]`` rows each)."""
    if logits.shape[0] != sum(rows):
        raise RuntimeError(f"the BERT step returned {logits.shape[0]} rows of logits for {sum(rows)} input rows.")
    return np.split(logits, np.cumsum(rows)[:-1])
