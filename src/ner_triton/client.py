"""gRPC clients of the ``ner`` models: TEXT ``[n]`` in, ENTITIES ``[n]`` (one JSON array per text) out.

Ensembles take TEXT ``[n]``; the local server's one-step ``ner`` batches requests, so it takes ``[n, 1]``
(Triton's batch dimension first): the client reads the model's metadata once and sends the shape it wants.

    with NerClient("127.0.0.1:8001") as client:
        for entities in client.extract(["Angela Merkel visited Paris."]):
            print([(e.entity, e.word) for e in entities])

``extract_documents`` is the documents mode: each document's sentences go as one text, so every sentence is read
with its neighbours (a model built with ``CONTEXT`` is trained for that), and the entities come back per sentence,
with offsets into each sentence (:mod:`ner_triton.documents`).

:class:`NerClient` is synchronous, :class:`AsyncNerClient` is the asyncio twin (it sends the chunks of a long
list concurrently). Many texts go in one request, split by the server's budgets: at most
``max_texts_per_request`` texts and ``max_bytes_per_request`` bytes per request (a longer text goes alone), and a
request the server finds over budget (too many windows or sub-tokens, INVALID_ARGUMENT "over budget") is split
in two and sent again, down to single texts.

* ``timeout_s`` is the deadline of one ``extract()`` call: every chunk and every retry of it shares it, so a
  call returns or raises within ``timeout_s`` (plus the moment it takes to notice).
* ``retry`` (a :class:`RetryPolicy`) retries overload and restarts with exponential backoff and full jitter,
  only while the deadline leaves room for the wait.
* ``tls`` (a :class:`Tls`) talks TLS to Triton's ``--grpc-use-ssl`` or to a TLS-terminating proxy, optionally
  with a client certificate (mutual TLS); ``headers`` go with every call as gRPC metadata (an auth token for
  the gateway; ``triton-grpc-protocol-<key>`` for Triton's own ``--grpc-restricted-protocol``).

Every failure is a :class:`~ner_triton.errors.ClientError`, chosen by the call's gRPC status code
(:data:`STATUS_ERRORS`): :class:`ServiceUnavailableError` (no server answers), :class:`DeadlineExceededError`,
:class:`OverloadedError` (the server answered but shed the request: retry), :class:`AccessDeniedError`
(credentials refused), :class:`InputRejectedError` (INVALID_ARGUMENT: the input is bad - it is also an
:class:`~ner_triton.errors.InvalidInputError`) or :class:`RequestRejectedError` (the server's reason).
``UNAVAILABLE`` means either "nothing answers" or "the server shed the request"; the channel's connectivity
tells which.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from ner_triton.decoding import Entity
from ner_triton.documents import PIECE_BYTES, Documents
from ner_triton.errors import (
    AccessDeniedError,
    ClientError,
    ConfigError,
    DeadlineExceededError,
    InputRejectedError,
    InvalidInputError,
    OverloadedError,
    RequestRejectedError,
    ServiceUnavailableError,
)
from ner_triton.schema import ENSEMBLE, ENTITIES, TEXT

DEFAULT_URL = "127.0.0.1:8001"
# Requests of ordinary text up to this size stay under the server's bulk_tokens (2048 sub-tokens by default,
# windows' overlaps and special tokens counted). Measured with the default model's vocabulary, 4 kB made 986-1,280
# sub-tokens of English, 1,920 of CJK, but 2,560 of Cyrillic: such requests go through the bulk lane
# (runtime.limits), where a busy lane answers UNAVAILABLE: retry (RetryPolicy) or lower this.
DEFAULT_MAX_BYTES = 4096
T = TypeVar("T")


# ------------------------------------------------------------------------------------------ transport


@dataclass(frozen=True)
class Tls:
    """TLS of the gRPC channel. Without ``root_certificates`` the system's CA bundle verifies the server;
    ``private_key`` with ``certificate_chain`` (PEM files, both or neither) present a client certificate;
    ``server_name`` checks the server's certificate for that name instead of the host in the URL."""

    root_certificates: Path | None = None
    private_key: Path | None = None
    certificate_chain: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.private_key is None) != (self.certificate_chain is None):
            raise ConfigError(
                "a client certificate needs both its private key and its certificate chain "
                "(--private-key and --certificate-chain): give both or neither."
            )

    @staticmethod
    def _read(path: Path | None, what: str) -> bytes | None:
        if path is None:
            return None
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the {what} {path} ({exc.strerror}): give the path of a PEM file.") from exc
        if b"-----BEGIN" not in data:
            raise ConfigError(f"{path} is not a PEM file (no -----BEGIN line): give the {what} in PEM form.")
        return data

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self._read(self.root_certificates, "root certificates"),
            private_key=self._read(self.private_key, "private key"),
            certificate_chain=self._read(self.certificate_chain, "certificate chain"),
        )


def channel_args(tls: Tls | None = None) -> list[tuple[str, Any]]:
    """gRPC channel options: tritonclient's defaults, plus a reconnect backoff capped at 1 s so a client
    finds a restarted server within a second instead of gRPC's default of up to two minutes."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

    args: list[tuple[str, Any]] = [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    if tls is not None and tls.server_name:
        args.append(("grpc.ssl_target_name_override", tls.server_name))
    return args


_HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Request headers as gRPC metadata: names lower-cased (gRPC requires it), values printable ASCII."""
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        key = name.strip().lower()
        if not _HEADER_NAME.fullmatch(key) or key.endswith("-bin") or key.startswith("grpc-"):
            raise ConfigError(
                f"header name {name!r} cannot be sent as gRPC metadata: use letters, digits, '-', '_' or '.', "
                "not ending in -bin and not starting with grpc-."
            )
        if not isinstance(value, str) or any(not 0x20 <= ord(c) < 0x7F for c in value):
            raise ConfigError(f"the value of header {key!r} must be printable ASCII (no line breaks).")
        out[key] = value
    return out


# --------------------------------------------------------------------------------------------- deadline


@dataclass(frozen=True)
class Deadline:
    """One point in time shared by every attempt of a call (``None``: no deadline)."""

    at: float | None

    @classmethod
    def after(cls, timeout_s: float | None) -> Deadline:
        return cls(None if timeout_s is None else time.monotonic() + timeout_s)

    def remaining(self) -> float | None:
        return None if self.at is None else self.at - time.monotonic()

    def allows(self, wait_s: float) -> bool:
        """True when waiting ``wait_s`` still leaves time for another attempt."""
        left = self.remaining()
        return left is None or left > wait_s


# ------------------------------------------------------------------------------------------------ errors


def status_code(exc: BaseException) -> grpc.StatusCode | None:
    """The gRPC status code of a tritonclient exception (``status()`` is e.g. ``"StatusCode.UNAVAILABLE"``)."""
    status = getattr(exc, "status", None)
    text = str(status() if callable(status) else status or "")
    name = text.rsplit(".", 1)[-1].strip()
    return grpc.StatusCode.__members__.get(name)


# Status code -> the error raised for it, and what to do about it. UNAVAILABLE is split by whether the
# channel is connected (OverloadedError: the server answered) or not (ServiceUnavailableError).
STATUS_ERRORS: dict[grpc.StatusCode, tuple[type[ClientError], str]] = {
    grpc.StatusCode.DEADLINE_EXCEEDED: (
        DeadlineExceededError,
        "raise the timeout or send fewer texts per call",
    ),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (OverloadedError, "retry with backoff (RetryPolicy) or add capacity"),
    grpc.StatusCode.NOT_FOUND: (RequestRejectedError, "check the model name"),
    grpc.StatusCode.INVALID_ARGUMENT: (InputRejectedError, "fix the named input"),
    grpc.StatusCode.FAILED_PRECONDITION: (RequestRejectedError, "fix the named input"),
    grpc.StatusCode.OUT_OF_RANGE: (RequestRejectedError, "fix the named input"),
    grpc.StatusCode.UNAUTHENTICATED: (
        AccessDeniedError,
        "send the credentials the gateway expects (--header, a client certificate)",
    ),
    grpc.StatusCode.PERMISSION_DENIED: (AccessDeniedError, "use credentials that are allowed this call"),
    grpc.StatusCode.UNIMPLEMENTED: (RequestRejectedError, "check that the address is a Triton gRPC endpoint"),
    grpc.StatusCode.INTERNAL: (RequestRejectedError, "see the server's log"),
    grpc.StatusCode.UNKNOWN: (RequestRejectedError, "see the server's log"),
    grpc.StatusCode.CANCELLED: (ClientError, "the call was cancelled"),
}
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)


def channel_connected(client: Any) -> bool | None:
    """Whether a synchronous tritonclient's channel is connected to a server right now (None: unknown)."""
    channel = getattr(client, "_channel", None)
    if channel is None:
        return None
    ready = grpc.channel_ready_future(channel)
    try:
        ready.result(timeout=0.05)
    except grpc.FutureTimeoutError:
        return False
    finally:
        ready.cancel()
    return True


SERVER_ANSWERED = "[request id:"  # the prefix tritonserver puts on the errors it returns
SERVER_BUSY = "server busy:"  # how our steps start the message of a large request that found no room
# How Triton refuses a gRPC call of a protocol restricted to a header (--grpc-restricted-protocol): UNAVAILABLE
RESTRICTED_PROTOCOL = "This protocol is restricted"


def error_message(exc: Exception) -> str:
    """The message of a tritonclient exception (its ``message()``), else its text."""
    return getattr(exc, "message", lambda: str(exc))() or str(exc)


def server_answered(exc: Exception) -> bool:
    """Whether the error's message shows that a server answered (Triton's request-id prefix, a refusal for a
    missing header, our steps' "server busy"): then no connectivity probe is needed to read an UNAVAILABLE."""
    message = error_message(exc)
    return any(mark in message for mark in (SERVER_ANSWERED, SERVER_BUSY, RESTRICTED_PROTOCOL))


def needs_probe(exc: Exception) -> bool:
    """An UNAVAILABLE its message does not explain: only then is the channel probed (``channel_connected``; the
    Locust user: a health call) to tell "shed" from "no server" - a wait that is not needed where the message
    already says a server answered."""
    return status_code(exc) is grpc.StatusCode.UNAVAILABLE and not server_answered(exc)


def translate_error(
    exc: Exception, url: str, model: str, timeout_s: float | None, connected: bool | None = None
) -> ClientError:
    """Map a tritonclient exception to our exception tree by its gRPC status code, with the fix.

    ``connected``: whether the channel reached the server, which splits ``UNAVAILABLE`` into "the server
    answered but shed the request" (True) and "no server answers" (False or unknown)."""
    code = status_code(exc)
    message = error_message(exc)
    if code is grpc.StatusCode.UNAVAILABLE and RESTRICTED_PROTOCOL in message:
        return AccessDeniedError(
            f"{model} at {url} refused the call ({message}): Triton restricts this protocol to callers that send "
            "the header it names (e.g. the admin key); send it with --header (or headers=)."
        )
    if code is grpc.StatusCode.UNAVAILABLE:
        # Triton's own errors carry its request-id prefix: that UNAVAILABLE came from a server that answered
        # (a full queue or a queue timeout), even when the connectivity probe was too slow to say so under load.
        if connected or server_answered(exc):
            return OverloadedError(
                f"{model} at {url} answered UNAVAILABLE ({message}): it shed the request (queue full or timed "
                "out, restarting) or expects a header; retry with backoff (RetryPolicy) or add capacity."
            )
        return ServiceUnavailableError(
            f"no NER server answers at {url} ({message}): start one with `make serve`, or check the address "
            "and TLS settings (a TLS server needs --ssl, a plain one must not get it)."
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(
            f"{model} at {url} did not answer within the deadline of {timeout_s} s (retries included): raise the "
            "timeout or send fewer texts per call."
        )
    kind, fix = STATUS_ERRORS.get(code, (RequestRejectedError, "see the server's log")) if code else (ClientError, "")
    what = code.name if code else "an error without a gRPC status"
    return kind(f"{model} at {url} rejected the request ({what}): {message}" + (f"; {fix}." if fix else ""))


@dataclass(frozen=True)
class RetryPolicy:
    """Retries with exponential backoff and full jitter, only for status codes worth retrying (the server
    is restarting or shedding load); bad input and deadlines are never retried."""

    retries: int = 2
    base_s: float = 0.05
    cap_s: float = 2.0
    retryable: tuple[str, ...] = tuple(c.name for c in RETRYABLE)

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.cap_s, self.base_s * 2**attempt))

    def should_retry(self, exc: Exception, attempt: int) -> bool:
        code = status_code(exc)
        if RESTRICTED_PROTOCOL in str(exc):  # UNAVAILABLE for a missing admin header: a retry cannot help
            return False
        return attempt < self.retries and code is not None and code.name in self.retryable


NO_RETRY = RetryPolicy(retries=0)


# ------------------------------------------------------------------------------------------- requests


OVER_BUDGET = "over budget"  # how the server's steps start the message of a request that costs too much


def _chunks(texts: Sequence[str], max_texts: int, max_bytes: int) -> list[Sequence[str]]:
    """Consecutive runs of at most ``max_texts`` texts and ``max_bytes`` UTF-8 bytes (a longer text alone)."""
    out: list[Sequence[str]] = []
    start, size = 0, 0
    for i, text in enumerate(texts):
        n = len(text.encode("utf-8"))
        if i > start and (i - start >= max_texts or size + n > max_bytes):
            out.append(texts[start:i])
            start, size = i, 0
        size += n
    if start < len(texts):
        out.append(texts[start:])
    return out


def _halves(part: Sequence[str], exc: Exception) -> tuple[Sequence[str], Sequence[str]] | None:
    """The two halves to send instead of ``part`` when the server found it over budget (None: not that case)."""
    if isinstance(exc, InputRejectedError) and OVER_BUDGET in str(exc) and len(part) > 1:
        return part[: len(part) // 2], part[len(part) // 2 :]
    return None


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


def text_inputs(module: Any, texts: Sequence[str], rank: int = 1) -> list[Any]:
    """The TEXT input of one request, in the rank the model wants (:func:`text_rank`)."""
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


def _check_settings(timeout_s: float | None, max_texts_per_request: int, max_bytes_per_request: int) -> None:
    if timeout_s is not None and not timeout_s > 0:
        raise ConfigError(f"timeout_s={timeout_s} must be > 0 (or None for no deadline).")
    if max_texts_per_request < 1:
        raise ConfigError(f"max_texts_per_request={max_texts_per_request} must be >= 1.")
    if max_bytes_per_request < 1:
        raise ConfigError(f"max_bytes_per_request={max_bytes_per_request} must be >= 1.")


class _Base:
    """What both clients share: settings, the error mapping and the retry loop's decisions."""

    def __init__(
        self,
        url: str,
        model: str,
        timeout_s: float | None,
        max_texts_per_request: int,
        retry: RetryPolicy,
        tls: Tls | None,
        headers: Mapping[str, str] | None,
        max_bytes_per_request: int,
    ) -> None:
        _check_settings(timeout_s, max_texts_per_request, max_bytes_per_request)
        self.max_bytes_per_request = max_bytes_per_request
        self.url, self.model, self.timeout_s = url, model, timeout_s
        self.max_texts_per_request, self.retry, self.tls = max_texts_per_request, retry, tls
        self.headers = check_headers(headers)
        self._creds = tls.credentials() if tls is not None else None

    def _client_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"url": self.url, "channel_args": channel_args(self.tls)}
        if self._creds is not None:
            kwargs["creds"] = self._creds
        return kwargs

    def _remaining(self, deadline: Deadline) -> float | None:
        left = deadline.remaining()
        if left is not None and left <= 0:
            raise DeadlineExceededError(
                f"{self.model} at {self.url} did not answer within the deadline of {self.timeout_s} s "
                "(retries included): raise the timeout or send fewer texts per call."
            )
        return left

    def _give_up(self, exc: Exception, attempt: int, delay: float, deadline: Deadline) -> bool:
        return not self.retry.should_retry(exc, attempt) or not deadline.allows(delay)


class NerClient(_Base):
    """Synchronous client of the NER ensemble over gRPC."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model: str = ENSEMBLE,
        timeout_s: float | None = 30.0,
        max_texts_per_request: int = 64,
        retry: RetryPolicy = NO_RETRY,
        *,
        tls: Tls | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes_per_request: int = DEFAULT_MAX_BYTES,
    ) -> None:
        import tritonclient.grpc as grpcclient

        super().__init__(url, model, timeout_s, max_texts_per_request, retry, tls, headers, max_bytes_per_request)
        self._mod = grpcclient
        self._client = grpcclient.InferenceServerClient(**self._client_kwargs())
        self._rank: int | None = None  # TEXT rank of the model: 1 (ensembles) or 2 (the batching one-step ner)

    def is_ready(self) -> bool:
        """True when the server answers and the model is ready."""
        try:
            headers = self.headers or None
            return bool(self._client.is_server_ready(headers) and self._client.is_model_ready(self.model, "", headers))
        except Exception:
            return False

    def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities of every text, in order (one deadline for the whole call)."""
        checked = _check_texts(texts)
        deadline = Deadline.after(self.timeout_s)
        out: list[list[Entity]] = []
        for part in _chunks(checked, self.max_texts_per_request, self.max_bytes_per_request):
            out.extend(self._extract_part(part, deadline))
        return out

    def extract_documents(
        self, documents: Sequence[Sequence[str]], piece_bytes: int = PIECE_BYTES
    ) -> list[list[list[Entity]]]:
        """Entities of every sentence of every document (the documents mode): each document's sentences go as one
        text (pieces of at most ``piece_bytes``), so each is read with its neighbours, and the entities come back
        per sentence with offsets into that sentence (:mod:`ner_triton.documents`)."""
        docs = Documents.of(documents, piece_bytes)
        return docs.entities(self.extract(docs.texts) if docs.texts else [])

    def _extract_part(self, part: Sequence[str], deadline: Deadline) -> list[list[Entity]]:
        try:
            return _parse(self._infer(part, deadline), len(part))
        except InputRejectedError as exc:
            halves = _halves(part, exc)
            if halves is None:
                raise
            return [e for half in halves for e in self._extract_part(half, deadline)]

    def _connected(self) -> bool | None:
        return channel_connected(self._client)

    def _infer(self, part: Sequence[str], deadline: Deadline) -> Any:
        attempt = 0
        while True:
            try:
                if self._rank is None:
                    meta = self._client.get_model_metadata(
                        self.model, headers=self.headers or None, as_json=True, client_timeout=self._remaining(deadline)
                    )
                    self._rank = text_rank(meta)
                return self._client.infer(
                    self.model,
                    text_inputs(self._mod, part, self._rank),
                    outputs=[self._mod.InferRequestedOutput(ENTITIES)],
                    client_timeout=self._remaining(deadline),
                    headers=self.headers or None,
                )
            except self._mod.InferenceServerException as exc:
                delay = self.retry.delay(attempt)
                if self._give_up(exc, attempt, delay, deadline):
                    connected = self._connected() if needs_probe(exc) else None
                    raise translate_error(exc, self.url, self.model, self.timeout_s, connected) from exc
                time.sleep(delay)
                attempt += 1

    def statistics(self, model: str = "") -> dict[str, Any]:
        """Triton's inference statistics (all models, or one) as a dict."""
        return self._client.get_inference_statistics(model, as_json=True, headers=self.headers or None)  # type: ignore[no-any-return]

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> NerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _gather_or_cancel(aws: list[Awaitable[T]]) -> list[T]:
    """All results in order; on the first failure the other calls are cancelled and it is raised."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class AsyncNerClient(_Base):
    """asyncio client of the NER ensemble over gRPC (``tritonclient.grpc.aio``); the chunks of one call go
    out concurrently, at most ``max_concurrent_requests`` at a time."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        model: str = ENSEMBLE,
        timeout_s: float | None = 30.0,
        max_texts_per_request: int = 64,
        retry: RetryPolicy = NO_RETRY,
        *,
        tls: Tls | None = None,
        headers: Mapping[str, str] | None = None,
        max_concurrent_requests: int = 8,
        max_bytes_per_request: int = DEFAULT_MAX_BYTES,
    ) -> None:
        import tritonclient.grpc as grpcclient
        import tritonclient.grpc.aio as aioclient

        super().__init__(url, model, timeout_s, max_texts_per_request, retry, tls, headers, max_bytes_per_request)
        if max_concurrent_requests < 1:
            raise ConfigError(f"max_concurrent_requests={max_concurrent_requests} must be >= 1.")
        self.max_concurrent_requests = max_concurrent_requests
        self._mod, self._aio = grpcclient, aioclient
        self._client = aioclient.InferenceServerClient(**self._client_kwargs())
        self._rank: int | None = None

    async def is_ready(self) -> bool:
        try:
            headers = self.headers or None
            return bool(
                await self._client.is_server_ready(headers)
                and await self._client.is_model_ready(self.model, "", headers)
            )
        except Exception:
            return False

    async def extract(self, texts: Sequence[str]) -> list[list[Entity]]:
        """Entities of every text, in order; the chunks are sent concurrently under one deadline."""
        checked = _check_texts(texts)
        deadline = Deadline.after(self.timeout_s)
        limit = asyncio.Semaphore(self.max_concurrent_requests)

        async def one(part: Sequence[str]) -> list[list[Entity]]:
            try:
                async with limit:
                    return _parse(await self._infer(part, deadline), len(part))
            except InputRejectedError as exc:
                halves = _halves(part, exc)
                if halves is None:
                    raise
                return [e for half in await _gather_or_cancel([one(h) for h in halves]) for e in half]

        chunks = _chunks(checked, self.max_texts_per_request, self.max_bytes_per_request)
        parts = await _gather_or_cancel([one(p) for p in chunks])
        return [entities for part in parts for entities in part]

    async def extract_documents(
        self, documents: Sequence[Sequence[str]], piece_bytes: int = PIECE_BYTES
    ) -> list[list[list[Entity]]]:
        """:meth:`NerClient.extract_documents`, asynchronously."""
        docs = Documents.of(documents, piece_bytes)
        return docs.entities(await self.extract(docs.texts) if docs.texts else [])

    def _connected(self) -> bool | None:
        channel = getattr(self._client, "_channel", None)
        if channel is None:
            return None
        return bool(channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.READY)

    async def _infer(self, part: Sequence[str], deadline: Deadline) -> Any:
        attempt = 0
        while True:
            try:
                if self._rank is None:
                    meta = await self._client.get_model_metadata(
                        self.model, headers=self.headers or None, as_json=True, client_timeout=self._remaining(deadline)
                    )
                    self._rank = text_rank(meta)
                return await self._client.infer(
                    self.model,
                    text_inputs(self._aio, part, self._rank),
                    outputs=[self._aio.InferRequestedOutput(ENTITIES)],
                    client_timeout=self._remaining(deadline),
                    headers=self.headers or None,
                )
            except self._mod.InferenceServerException as exc:
                delay = self.retry.delay(attempt)
                if self._give_up(exc, attempt, delay, deadline):
                    connected = self._connected() if needs_probe(exc) else None
                    raise translate_error(exc, self.url, self.model, self.timeout_s, connected) from exc
                await asyncio.sleep(delay)
                attempt += 1

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> AsyncNerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
