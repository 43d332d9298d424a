"""The BERT step inside Triton: ONNX Runtime over the requests of one (ragged) dynamic batch.

Each step raises :class:`~ner_triton.errors.InvalidInputError` for a bad request; the adapter turns it into
an error response for that request only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ner_triton.decoding import best_labels
from ner_triton.errors import InvalidInputError
from ner_triton.runtime.graph import lookup_table_rows
from ner_triton.runtime.session import onnx_session, shrink_options, trim_heap
from ner_triton.runtime.slots import Activity
from ner_triton.schema import ATTENTION_MASK, LOGITS


class BertRunner:
    """ONNX Runtime over the requests of one dynamic batch: grouped by length (:func:`length_groups`),
    each group padded to its longest and run in slices of at most ``max_run_tokens`` padded positions (which
    bounds the activations' memory), logits split back per request.

    ``shrink_above``: after a run of more padded positions than this, ONNX Runtime's CPU arena gives back
    what the run grew it by (``memory.enable_memory_arena_shrinkage``) and the C heap is trimmed, so one
    large batch does not keep its peak memory for the life of the stub; smaller runs keep the arena warm.

    ``threads_alone`` (with an ``activity``: :class:`~ner_triton.runtime.slots.Activity`): a second session with
    that many intra-op threads, used for a batch that starts while no other instance of the model runs one. One
    request at a time then gets the host's cores (one thread per instance is the best split under load, where
    every instance is busy, and the worst at one client).
    """

    def __init__(
        self,
        onnx_path: Path,
        threads: int,
        max_padding: float = 0.25,
        spinning: bool = True,
        max_run_tokens: int = 8192,
        shrink_above: int = 2048,
        threads_alone: int = 0,
        activity: Activity | None = None,
    ) -> None:
        # a server's sessions: threads spin during a run only (between runs the cores go to the other processes)
        self.session = onnx_session(onnx_path, threads, spinning, spin_between_runs=False)
        self.activity = activity if threads_alone > threads else None
        self.alone = (
            onnx_session(onnx_path, threads_alone, spinning, spin_between_runs=False)
            if self.activity is not None
            else None
        )
        self.runs_alone = 0  # batches run on the ``threads_alone`` session (observability, tests)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.table_rows = lookup_table_rows(onnx_path, self.input_names)
        self.max_padding = max_padding
        self.max_run_tokens = max_run_tokens
        self.shrink_above = shrink_above
        self._shrink = shrink_options()

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
        for group, logits in self._groups(feeds):
            row = 0
            for i in group:
                rows, k = feeds[i][self.input_names[0]].shape
                out[i] = np.ascontiguousarray(logits[row : row + rows, :k])
                row += rows
        return out

    def predict(
        self, feeds: Sequence[dict[str, np.ndarray]], widen: bool = True
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Like :meth:`run`, each feed's most likely label ids and their probabilities ``[rows_i, len_i]``
        (:func:`~ner_triton.decoding.best_labels`, computed once per ONNX Runtime run, not once per text).
        ``widen=False``: never on the ``threads_alone`` session (the bulk lane)."""
        out: list[tuple[np.ndarray, np.ndarray]] = [(np.empty(0), np.empty(0))] * len(feeds)
        for group, logits in self._groups(feeds, widen):
            best, scores = best_labels(logits)
            row = 0
            for i in group:
                rows, k = feeds[i][self.input_names[0]].shape
                out[i] = (best[row : row + rows, :k], scores[row : row + rows, :k])
                row += rows
        return out

    def _groups(
        self, feeds: Sequence[dict[str, np.ndarray]], widen: bool = True
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """Each length group's feeds (:func:`length_groups`) and the logits of their rows, in group order: one
        padded array per input and group (a lone feed is run as it is). The whole call runs on one session: the
        ``threads_alone`` one when no other instance is running a batch as it starts."""
        if self.activity is None or self.alone is None or not widen:
            yield from self._grouped(feeds, self.session)
            return
        with self.activity.running():  # taken before looking: two instances starting together both see the other
            alone = self.activity.others_busy() == 0
            self.runs_alone += alone
            yield from self._grouped(feeds, self.alone if alone else self.session)

    def _grouped(self, feeds: Sequence[dict[str, np.ndarray]], session: Any) -> Iterator[tuple[list[int], np.ndarray]]:
        first = self.input_names[0]
        for group in length_groups([f[first].shape for f in feeds], self.max_padding):
            length = max(feeds[i][first].shape[1] for i in group)
            if len(group) == 1:
                batch = {n: feeds[group[0]][n] for n in self.input_names}
            else:
                total = sum(feeds[i][first].shape[0] for i in group)
                batch = {n: np.zeros((total, length), np.int64) for n in self.input_names}
                row = 0
                for i in group:
                    rows, k = feeds[i][first].shape
                    for n in self.input_names:
                        batch[n][row : row + rows, :k] = feeds[i][n]
                    row += rows
            yield group, self._run(batch, length, session)

    def _run(self, batch: dict[str, np.ndarray], length: int, session: Any = None) -> np.ndarray:
        """Logits of ``batch`` (rows of ``length``), in slices of at most ``max_run_tokens`` positions."""
        session = session or self.session
        step = max(1, self.max_run_tokens // max(length, 1))
        rows = batch[self.input_names[0]].shape[0]
        parts, shrunk = [], False
        for a in range(0, rows, step):
            part = {n: v[a : a + step] for n, v in batch.items()}
            big = part[self.input_names[0]].size > self.shrink_above
            parts.append(session.run([LOGITS], part, self._shrink if big else None)[0])
            shrunk |= big
        if shrunk:  # once, after the slices: the arena gave its chunks back to the heap
            trim_heap()
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


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
