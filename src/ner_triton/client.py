"""gRPC clients of the ``ner`` models: TEXT ``[n]`` in, ENTITIES ``[n]`` (one JSON array per text) out.

Ensembles take TEXT ``[n]``; the local server's one-step ``ner`` batches requests, so it takes ``[n, 1]``
(Triton's batch dimension first): the client reads the model's metadata once and sends the shape it wants.

    with NerClient("127.0.0.1:8001") as client:
        for entities in client.extract(["Angela Merkel visited Paris."]):
            print([(e.entity, e.word) for e in entities])

:class:`NerClient` is synchronous, :class:`AsyncNerClient` is the asyncio twin. Many texts go in one
request (up to ``max_texts_per_request``; longer lists are split); ``retry`` (a :class:`RetryPolicy`) retries
overload and restarts with exponential backoff and jitter. Every failure is a
:class:`~ner_triton.errors.ClientError`: :class:`ServiceUnavailableError` (no server),
:class:`DeadlineExceededError` (too slow for ``timeout_s``) or :class:`RequestRejectedError` (the server's reason).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ner_triton.decoding import Entity
from ner_triton.errors import (
    ClientError,
    DeadlineExceededError,
    InvalidInputError,
    RequestRejectedError,
    ServiceUnavailableError,
)
from ner_triton.schema import ENSEMBLE, ENTITIES, TEXT

DEFAULT_URL = "127.0.0.1:8001"


def channel_args() -> list[tuple[str, int]]:
    """gRPC channel options: tritonclient's defaults, plus a reconnect backoff capped at 1 s so a client
    finds a restarted server within a second instead of gRPC's default of up to two minutes."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]


def _chunks(texts: Sequence[str], size: int) -> list[Sequence[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str | bytes):
        raise InvalidInputError("texts must be a list of strings, not a single string: wrap it in a list.")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidInputError(f"text {i} is a {type(t).__name__}, not a str: decode it to str first.")
    return out


def text_rank(metadata: dict[str, Any]) -> int:
    """Rank of the TEXT input in a model's metadata (1 for ensembles, 2 for a batching model)."""
    for tensor in metadata.get("inputs", []):
        if tensor.get("name") == TEXT:
            return len(tensor.get("shape", [-1]))
    return 1


def _inputs(module: Any, texts: Sequence[str], rank: int = 1) -> list[Any]:
    shape = [len(texts)] + [1] * (rank - 1)
    data = np.array([t.encode("utf-8") for t in texts], dtype=np.object_).reshape(shape)
    tensor = module.InferInput(TEXT, shape, "BYTES")
    tensor.set_data_from_numpy(data)
    return [tensor]


def _parse(result: Any, n: int) -> list[list[Entity]]:
    raw = result.as_numpy(ENTITIES)
    raw = None if raw is None else raw.reshape(-1)
    if raw is None or len(raw) != n:
        raise ClientError(f"the server returned {0 if raw is None else len(raw)} results for {n} texts.")
    return [[Entity(**e) for e in json.loads(item)] for item in raw]


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff and full jitter, only for statuses worth retrying
    (the server is restarting or shedding load); bad input and deadlines are never retried."""

    retries: int = 2
    base_s: float = 0.05
    cap_s: float = 2.0
    retryable: tuple[str, ...] = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.cap_s, self.base_s * 2**attempt))

    def should_retry(self, exc: Exception, attempt: int) -> bool:
        status = str(getattr(exc, "status", lambda: "")() or "")
        return attempt < self.retries and any(s in status for s in self.retryable)


NO_RETRY = RetryPolicy(retries=0)


OVERLOAD_MARKERS = ("request timeout expired", "exceeds maximum queue size", "maximum queue size")


def translate_error(exc: Exception, url: str, model: str, timeout_s: float | None) -> ClientError:
    """Map a tritonclient exception to our exception tree, with the fix in the message."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    message = getattr(exc, "message", lambda: str(exc))() or str(exc)
    low = message.lower()
    if any(m in low for m in OVERLOAD_MARKERS):
        return RequestRejectedError(
            f"{model} at {url} is overloaded and shed this request ({message}): retry with backoff "
            "(RetryPolicy) or add capacity."
        )
    if "UNAVAILABLE" in status or "failed to connect" in low or "connection refused" in low:
        return ServiceUnavailableError(f"no NER server answers at {url} ({message}): start one with `make serve`.")
    if "DEADLINE_EXCEEDED" in status or "deadline" in low:
        return DeadlineExceededError(
            f"{model} at {url} did not answer within {timeout_s} s: raise the timeout or send fewer texts per call."
        )
    if "NOT_FOUND" in status or "unknown model" in low:
        return RequestRejectedError(f"{url} does not serve model {model!r} ({message}): check the model name.")
    return RequestRejectedError(f"{model} at {url} rejected the request: {message}")


class NerClient:
    """Synchronous client of the NER ensemble over gRPC."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model: str = ENSEMBLE,
        timeout_s: float | None = 30.0,
        max_texts_per_request: int = 64,
        retry: RetryPolicy = NO_RETRY,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self._mod = grpcclient
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self.max_texts_per_request, self.retry = max_texts_per_request, retry
        self._client = grpcclient.InferenceServerClient(url=url, channel_args=channel_args())
        self._rank: int | None = None

    def is_ready(self) -> bool:
        """True when the server answers and the model is ready."""
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:
            return False

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities of every text, in order."""
        checked = _check_texts(texts)
        out: list[list[Entity]] = []
        for part in _chunks(checked, self.max_texts_per_request):
            out.extend(_parse(self._infer(part), len(part)))
        return out

    def _infer(self, part: Sequence[str]) -> Any:
        attempt = 0
        while True:
            try:
                if self._rank is None:
                    self._rank = text_rank(self._client.get_model_metadata(self.model, as_json=True))
                return self._client.infer(
                    self.model,
                    _inputs(self._mod, part, self._rank),
                    outputs=[self._mod.InferRequestedOutput(ENTITIES)],
                    client_timeout=self.timeout_s,
                )
            except self._mod.InferenceServerException as exc:
                if not self.retry.should_retry(exc, attempt):
                    raise translate_error(exc, self.url, self.model, self.timeout_s) from exc
                time.sleep(self.retry.delay(attempt))
                attempt += 1

    def statistics(self, model: str = "") -> dict[str, Any]:
        """Triton's inference statistics (all models, or one) as a dict."""
        return self._client.get_inference_statistics(model, as_json=True)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> NerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncNerClient:
    """asyncio client of the NER ensemble over gRPC (``tritonclient.grpc.aio``)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model: str = ENSEMBLE,
        timeout_s: float | None = 30.0,
        max_texts_per_request: int = 64,
        retry: RetryPolicy = NO_RETRY,
    ) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as aioclient

        self._mod, self._aio = grpcclient, aioclient
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self.max_texts_per_request, self.retry = max_texts_per_request, retry
        self._client = aioclient.InferenceServerClient(url=url, channel_args=channel_args())
        self._rank: int | None = None

    async def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        checked = _check_texts(texts)
        out: list[list[Entity]] = []
        for part in _chunks(checked, self.max_texts_per_request):
            out.extend(_parse(await self._infer(part), len(part)))
        return out

    async def _infer(self, part: Sequence[str]) -> Any:
        attempt = 0
        while True:
            try:
                if self._rank is None:
                    self._rank = text_rank(await self._client.get_model_metadata(self.model, as_json=True))
                return await self._client.infer(
                    self.model,
                    _inputs(self._aio, part, self._rank),
                    outputs=[self._aio.InferRequestedOutput(ENTITIES)],
                    client_timeout=self.timeout_s,
                )
            except self._mod.InferenceServerException as exc:
                if not self.retry.should_retry(exc, attempt):
                    raise translate_error(exc, self.url, self.model, self.timeout_s) from exc
                await asyncio.sleep(self.retry.delay(attempt))
                attempt += 1

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncNerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
