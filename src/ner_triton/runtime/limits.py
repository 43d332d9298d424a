"""What one request to the ensemble may hold: the limits of the tokenizer step, carried in its config."""

from __future__ import annotations

from dataclasses import dataclass

from ner_triton.errors import ConfigError


@dataclass(frozen=True)
class Limits:
    """What one request may hold. Long texts are split into windows, not truncated."""

    max_texts: int = 64
    max_text_bytes: int = 100_000
    max_windows: int = 64
    max_length: int = 128
    stride: int = 32
    # Sequence lengths a request's windows are padded up to (e.g. 16,32,64,128), so requests of one
    # bucket have equal shapes and a non-ragged backend (TensorRT) batches them; () = pad to the longest.
    buckets: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if min(self.max_texts, self.max_text_bytes, self.max_windows) <= 0:
            raise ConfigError(f"limits must be positive: {self}")
        if not 0 <= self.stride < self.max_length - 2:
            raise ConfigError(f"stride={self.stride} must be in [0, max_length - 2)")
        if self.buckets and (list(self.buckets) != sorted(set(self.buckets)) or self.buckets[-1] < self.max_length):
            raise ConfigError(f"buckets={self.buckets} must ascend and end at >= max_length={self.max_length}")

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
