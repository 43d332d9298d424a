"""The whole NER pipeline in one step: TEXT -> windows -> ONNX Runtime -> entities, over a dynamic batch.

On a CPU host every hand-over between Triton and a python-backend stub costs a copy through shared memory
and a wake-up of another process; the three-step ensemble pays three of them per request, plus the
ensemble scheduler. :class:`FusedNer` composes the very same steps (:class:`~ner_triton.runtime.steps.Preprocessor`,
:class:`~ner_triton.runtime.bert.BertRunner`, :class:`~ner_triton.runtime.steps.Postprocessor`) inside one
python model with dynamic batching: the windows of every text of every request in a batch are grouped by
length and run together, then decoded per text. The local CPU server serves it as ``ner``; the three-step
ensembles (``ner_<variant>``) stay for the layouts whose BERT step is a C++ backend (NGC, TensorRT).

Budgets (:mod:`ner_triton.runtime.limits`): each request is checked as a whole (bytes, windows, sub-tokens);
the requests of a batch are admitted cheapest first within ``max_batch_tokens``; a request above
``bulk_tokens`` runs only while it holds a host-wide bulk slot (:mod:`ner_triton.runtime.slots`), and every
request of more than ``bulk_tokens`` bytes is tokenized and run on a thread of lower CPU priority
(``bulk_nice``), so the cores go to short requests first. Results go
out as soon as they are ready (``send``), cheap requests first, so a short request never waits for a large one
of the same batch.

A version directory of this model holds ``model.onnx`` (the build's chosen CPU variant), ``tokenizer/``,
``labels.json`` and ``served.json`` (which variant it is and why; :mod:`ner_triton.repository.install`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ner_triton.errors import CapacityError, InvalidInputError
from ner_triton.labels import LabelMap
from ner_triton.runtime.bert import BertRunner
from ner_triton.runtime.limits import Limits
from ner_triton.runtime.session import trim_heap
from ner_triton.runtime.slots import Activity, LowPriority, Slot, Slots
from ner_triton.runtime.steps import Postprocessor, Preprocessor, check_sizes, decode_texts
from ner_triton.schema import (
    ATTENTION_MASK,
    LABELS_FILE,
    ONNX_MODEL_FILE,
    TOKENIZER_DIR,
)
from ner_triton.signals import Observer

WARMUP_TEXT = "Warm-up sentence from Paris ."
Result = np.ndarray | InvalidInputError | CapacityError
Send = Callable[[int, Result], None]


@dataclass
class _Request:
    """One request on its way through the steps: its texts' tensors and what it costs."""

    index: int
    shape: tuple[int, ...]  # the TEXT tensor's shape, which ENTITIES repeats
    raw: np.ndarray  # [n] bytes
    texts: list[dict[str, np.ndarray]]
    tokens: int = 0  # sub-tokens over all its windows (the budgets' measure), counted once
    slot: Slot | None = None  # the bulk slot it already holds (a request over bulk_bytes)
    strings: list[str] = field(default_factory=list)  # the texts, decoded and checked once (decode_texts)

    def __post_init__(self) -> None:
        self.tokens = sum(int(t[ATTENTION_MASK].sum()) for t in self.texts)


def _sized(raw: np.ndarray) -> tuple[np.ndarray, int]:
    """A TEXT tensor's texts in a flat array, and their bytes (what is not bytes counts 0: ``_prepare`` names it)."""
    flat = raw.reshape(-1) if raw.dtype == np.object_ else raw
    return flat, sum(len(x) for x in flat if isinstance(x, bytes))


class FusedNer:
    """Tokenize, run and decode the texts of many requests at once; one result (or error) per request."""

    def __init__(
        self,
        version_dir: Path,
        limits: Limits,
        threads: int,
        max_padding: float = 0.25,
        spinning: bool = True,
        slots: Slots | None = None,
        threads_alone: int = 0,
    ) -> None:
        self.limits = limits
        self.pre = Preprocessor(version_dir / TOKENIZER_DIR, limits)
        # a batch that starts while no other instance of this model runs one gets threads_alone threads
        activity = Activity(str(version_dir.resolve())) if threads_alone > threads else None
        self.bert = BertRunner(
            version_dir / ONNX_MODEL_FILE, threads, max_padding, spinning, limits.max_run_tokens,
            threads_alone=threads_alone, activity=activity,
        )  # fmt: skip
        self.post = Postprocessor(LabelMap.load(version_dir / LABELS_FILE))
        self.slots = slots or Slots(str(version_dir.resolve()), limits.bulk_slots)
        self.low = LowPriority(limits.bulk_nice)
        self.observer: Observer | None = None  # quality signals; the adapter sets it after the warm-up
        self([np.array([WARMUP_TEXT.encode()], dtype=np.object_)])  # first-run allocations before traffic

    def all_small(self, requests: Sequence[np.ndarray]) -> bool:
        """True when no request of the batch can reach the bulk lane, so none needs its answer ahead of the others.

        Decided from sizes alone, before any tokenizing: a sub-token covers at least one byte of text, each window
        adds two special tokens, and each extra window of a text needs ``max_length - 2 - stride`` new sub-tokens
        and repeats ``stride`` of the last. So ``b`` bytes in ``n`` texts make at most ``b + 2n + b * (stride + 2) /
        (max_length - 2 - stride)`` sub-tokens; every request's bound must stay within ``bulk_tokens`` (and its bytes
        within ``bulk_bytes``)."""
        lim = self.limits
        step = max(1, lim.max_length - 2 - lim.stride)
        for raw in requests:
            flat, size = _sized(raw)
            if not all(isinstance(x, bytes) for x in flat):
                return False
            bound = size + 2 * len(flat) + -(-size * (lim.stride + 2) // step)
            if size > lim.bulk_bytes or bound > lim.bulk_tokens:
                return False
        return True

    def __call__(self, requests: Sequence[np.ndarray], send: Send | None = None) -> list[Result]:
        """``requests[i]`` is a TEXT tensor (``[n]`` or ``[n, 1]`` bytes); its result is ENTITIES of the same
        shape (one JSON array per text), or the error that request gets. Each result is handed to ``send(i,
        result)`` as soon as it is ready (cheap requests first), and all are returned in request order."""
        out: list[Result] = [InvalidInputError("not run")] * len(requests)

        def done(i: int, result: Result) -> None:
            out[i] = result
            if self.observer is not None and isinstance(result, Exception):
                self.observer.reject(result)
            if send is not None:
                send(i, result)

        small: list[tuple[int, tuple[int, ...], np.ndarray]] = []
        large: list[tuple[int, tuple[int, ...], np.ndarray]] = []
        for r, raw in enumerate(requests):
            flat, size = _sized(raw)
            (large if size > self.limits.bulk_bytes else small).append((r, raw.shape, flat))
        # short requests first: prepared, admitted and answered before any large one is even tokenized
        used, admitted = self._admit([self._try(done, self._prepare, *q) for q in small], 0, done)
        for index, result in self._run([q for q in admitted if q.tokens <= self.limits.bulk_tokens]):
            done(index, result)
        # then the bulk lane: each request holds a host-wide slot and runs on the low-priority thread
        bulk = [q for q in admitted if q.tokens > self.limits.bulk_tokens]
        held: list[Slot] = []  # every slot taken here, released on every path (release is idempotent)
        try:
            prepared = [self._try(done, self._prepare_large, *q, held) for q in large]
            used, more = self._admit(prepared, used, done)
            # those that already hold a slot first: a token-heavy request of this batch gets it after them
            for req in sorted(bulk + more, key=lambda q: (q.slot is None, q.tokens)):
                slot = req.slot
                if slot is None:
                    slot = self.slots.try_acquire()
                    if slot is None:
                        done(req.index, CapacityError(self._busy(self._bulk_taken())))
                        continue
                    held.append(slot)
                with slot:
                    for index, result in self.low(self._run, [req], False):
                        done(index, result)
        finally:  # a fault on the way must not keep a slot from the other instances
            for slot in held:
                slot.release()
            if large:  # a large request's tokens and tensors were freed: give the heap back (refused ones too)
                trim_heap()
        return out

    @staticmethod
    def _try(
        done: Send,
        prepare: Callable[..., _Request],
        index: int,
        shape: tuple[int, ...],
        flat: np.ndarray,
        *more: object,
    ) -> _Request | None:
        """``prepare``'s request, or None when the request got its error (bad input, over budget, no slot)."""
        try:
            return prepare(index, shape, flat, *more)
        except (InvalidInputError, CapacityError) as exc:
            done(index, exc)
            return None

    def _admit(self, reqs: list[_Request | None], used: int, done: Send) -> tuple[int, list[_Request]]:
        """The requests that fit in what is left of the batch's sub-token budget, cheapest first; the others
        are told to retry (one request alone always fits)."""
        admitted = []
        for req in sorted((q for q in reqs if q is not None), key=lambda q: q.tokens):
            if used and used + req.tokens > self.limits.max_batch_tokens:
                why = f"this batch's budget of {self.limits.max_batch_tokens} sub-tokens (max_batch_tokens) is spent"
                if req.slot is not None:
                    req.slot.release()
                done(req.index, CapacityError(self._busy(why)))
                continue
            used += req.tokens
            admitted.append(req)
        return used, admitted

    def _bulk_taken(self) -> str:
        return (
            f"{self.limits.bulk_slots} large request(s) (over {self.limits.bulk_tokens} sub-tokens or "
            f"{self.limits.bulk_bytes} bytes: bulk_tokens, bulk_bytes) already run on this host"
        )

    def _prepare(self, index: int, shape: tuple[int, ...], flat: np.ndarray) -> _Request:
        """A request's checks (count, bytes, UTF-8, controls), windows and sub-token budget."""
        strings = decode_texts(flat, self.limits)
        return _Request(index, shape, flat, self.pre.encode_each(strings), strings=strings)

    def _prepare_large(self, index: int, shape: tuple[int, ...], flat: np.ndarray, held: list[Slot]) -> _Request:
        """:meth:`_prepare` for a request of more than ``bulk_bytes``: it takes a bulk slot first (none free: refused
        before any tokenizing; the slot goes into ``held`` at once) and is tokenized on the low-priority thread."""
        check_sizes(flat, self.limits)
        slot = self.slots.try_acquire()
        if slot is None:
            raise CapacityError(self._busy(self._bulk_taken()))
        held.append(slot)
        try:
            req = self.low(self._prepare, index, shape, flat)
        except BaseException:
            slot.release()
            raise
        req.slot = slot
        return req

    def _busy(self, why: str) -> str:
        return (
            f"server busy: {why}; retry with backoff, or send smaller requests (at most {self.limits.bulk_tokens} "
            f"sub-tokens and {self.limits.bulk_bytes} bytes stay out of the bulk lane)."
        )

    def _run(self, reqs: list[_Request], widen: bool = True) -> list[tuple[int, Result]]:
        """Run the texts of ``reqs`` together: each request's index and entities (``widen=False``: the bulk lane,
        never on more threads than configured)."""
        texts = [(req, i, t) for req in reqs for i, t in enumerate(req.texts)]
        if not texts:
            return []
        feeds = [{n: t[n] for n in self.bert.input_names} for _, _, t in texts]
        entities: dict[int, list[bytes]] = {req.index: [] for req in reqs}
        # label ids and probabilities once per ONNX Runtime run; each text decoded from its own windows' rows
        for (req, i, t), (best, scores) in zip(texts, self.bert.predict(feeds, widen), strict=True):
            entities[req.index].append(self.post.text_json(req.strings[i], best, scores, t))
        answers = [np.array(entities[req.index], dtype=np.object_).reshape(req.shape) for req in reqs]
        if self.observer is not None:
            self.observer.observe([(req.texts, answer) for req, answer in zip(reqs, answers, strict=True)])
        return [(req.index, answer) for req, answer in zip(reqs, answers, strict=True)]
