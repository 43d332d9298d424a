"""Budgets: what one request and one dynamic batch may cost, carried in the models' config parameters.

A limit per text is not a limit per request, and a limit per request is not a limit per batch: the worst
request the limits accept must cost a bounded time and memory, and so must the worst dynamic batch.

* **One request** (:meth:`Limits.check_request`): at most ``max_texts`` texts of at most ``max_text_bytes``
  each and ``max_request_bytes`` together (this bounds the tokenizer's work before anything else runs), then at
  most ``max_windows`` windows and ``max_tokens`` sub-tokens over all its texts (this bounds the model's work).
  Over any of them: :class:`~ner_triton.errors.BudgetExceededError` (INVALID_ARGUMENT) naming the limit and how
  to split the request.
* **Bulk lane** (the fused ``ner``): a request of more than ``bulk_bytes`` bytes or ``bulk_tokens`` sub-tokens
  runs only while it holds one of ``bulk_slots`` slots shared by every instance of the model on the host
  (:mod:`ner_triton.runtime.slots`); without a free slot it is refused at once (UNAVAILABLE, retry) - one over
  ``bulk_bytes`` before any tokenizing - so large requests never occupy every instance and short requests keep
  flowing. Bulk requests are tokenized and run on a thread ``bulk_nice`` steps lower in CPU priority, so the
  cores serve short requests first (the calling thread's share: with ``threads`` > 1 ONNX Runtime's other
  threads keep normal priority). NerClient's requests (at most 4 kB) of English or CJK text stay out of it.
* **One dynamic batch** (the fused ``ner``): requests are admitted cheapest first while their sub-tokens fit in
  ``max_batch_tokens``; the rest are refused (UNAVAILABLE, retry). One request alone is always admitted.
* **One ONNX Runtime run**: at most ``max_run_tokens`` padded positions (windows x length) are run at once, which
  bounds the activations' memory whatever the batch holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from ner_triton.errors import BudgetExceededError, ConfigError


@dataclass(frozen=True)
class Limits:
    """What one request and one dynamic batch may cost. Long texts are split into windows, not truncated."""

    max_texts: int = 64
    max_text_bytes: int = 100_000
    max_request_bytes: int = 200_000
    max_windows: int = 64
    max_tokens: int = 8192
    max_length: int = 128
    stride: int = 32
    # Sequence lengths a request's windows are padded up to (e.g. 16,32,64,128), so requests of one
    # bucket have equal shapes and a non-ragged backend (TensorRT) batches them; () = pad to the longest.
    buckets: tuple[int, ...] = ()
    # Dynamic batch and ONNX Runtime budgets (python-backend steps).
    max_batch_tokens: int = 16384
    max_run_tokens: int = 8192
    bulk_tokens: int = 2048
    bulk_bytes: int = 16384
    bulk_slots: int = 1
    bulk_nice: int = 10

    def __post_init__(self) -> None:
        sizes = {k: v for k, v in vars(self).items() if k not in ("buckets", "stride", "bulk_nice")}
        bad = {k: v for k, v in sizes.items() if v <= 0}
        if bad:
            raise ConfigError(f"limits must be positive: {bad}")
        if not 0 <= self.stride < self.max_length - 2:
            raise ConfigError(f"stride={self.stride} must be in [0, max_length - 2)")
        if self.buckets and (list(self.buckets) != sorted(set(self.buckets)) or self.buckets[-1] < self.max_length):
            raise ConfigError(f"buckets={self.buckets} must ascend and end at >= max_length={self.max_length}")
        if self.max_tokens < self.max_length:
            raise ConfigError(f"max_tokens={self.max_tokens} must be >= max_length={self.max_length} (one window).")
        if self.max_batch_tokens < self.max_tokens:
            raise ConfigError(
                f"max_batch_tokens={self.max_batch_tokens} must be >= max_tokens={self.max_tokens}, or the "
                "largest request could never be run."
            )
        if not 0 <= self.bulk_nice <= 19:
            raise ConfigError(f"bulk_nice={self.bulk_nice} must be in [0, 19] (0: large requests at normal priority).")
        if self.max_run_tokens < self.max_length:
            raise ConfigError(f"max_run_tokens={self.max_run_tokens} must be >= max_length={self.max_length}.")

    @classmethod
    def from_parameters(cls, params: dict[str, str]) -> Limits:
        """From Triton config ``parameters`` (string values); missing keys keep defaults."""
        known: dict[str, object] = {
            k: int(v) for k, v in params.items() if k in cls.__dataclass_fields__ and k != "buckets"
        }
        if "buckets" in params:
            known["buckets"] = tuple(int(b) for b in params["buckets"].split(",") if b.strip())
        return cls(**known)  # type: ignore[arg-type]

    def to_parameters(self) -> dict[str, str]:
        """The inverse of :meth:`from_parameters`."""
        out = {k: str(v) for k, v in vars(self).items() if k != "buckets"}
        if self.buckets:
            out["buckets"] = ",".join(map(str, self.buckets))
        return out

    def padded_length(self, length: int) -> int:
        """``length`` rounded up to the smallest bucket that holds it (itself without buckets)."""
        return next((b for b in self.buckets if b >= length), length)

    def check_request(self, windows: int, tokens: int) -> None:
        """Raise :class:`BudgetExceededError` when a request's windows or sub-tokens are over budget."""
        if windows > self.max_windows:
            raise BudgetExceededError(
                f"over budget: the request's texts make {windows} windows of up to {self.max_length} tokens; "
                f"one request may hold {self.max_windows} (max_windows): send fewer or shorter texts per request "
                "(NerClient splits lists of texts for you)."
            )
        if tokens > self.max_tokens:
            raise BudgetExceededError(
                f"over budget: the request's texts make {tokens} sub-tokens; one request may hold "
                f"{self.max_tokens} (max_tokens): send fewer or shorter texts per request (NerClient splits "
                "lists of texts for you)."
            )
