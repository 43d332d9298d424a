"""``ner-client``: entities of texts from a running NER server, as a table, JSON or streamed JSON Lines.

ner-client "Angela Merkel met Emmanuel Macron in Paris."
cat sentences.txt | ner-client --jsonl                  # one JSON object per input line, as the lines arrive
cat documents.txt | ner-client --documents --json       # a sentence per line, a blank line between documents
ner-client --ssl --root-certificates ca.pem -H @headers.txt --url ner.example.com:443 "..."
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ner_triton.cli import EXIT_INTERRUPTED, Command
from ner_triton.client import DEFAULT_URL, NerClient, RetryPolicy, Tls
from ner_triton.decoding import Entity
from ner_triton.errors import (
    AccessDeniedError,
    ConfigError,
    DeadlineExceededError,
    InvalidInputError,
    NerTritonError,
    OverloadedError,
    RequestRejectedError,
    ServiceUnavailableError,
)
from ner_triton.schema import ENSEMBLE

log = logging.getLogger(__name__)

# Exit codes (listed in --help). 2 stays argparse's "usage error".
EXIT_OK = 0
EXIT_ERROR = 1  # a setting or file of this command is wrong (the message names it)
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_DEADLINE = 4
EXIT_REJECTED = 5
EXIT_OVERLOADED = 6
EXIT_ACCESS_DENIED = 7
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (EXIT_OK, "every text was analysed"),
    (EXIT_ERROR, "a setting or file of this command is wrong (bad header, unreadable certificate, ...)"),
    (EXIT_USAGE, "wrong command line (argparse), or no text given"),
    (EXIT_UNAVAILABLE, "no server answers at --url (or the TLS handshake failed)"),
    (EXIT_DEADLINE, "the server did not answer within --timeout (retries included)"),
    (EXIT_REJECTED, "the server rejected a request (bad input, unknown model); with --jsonl: some lines failed"),
    (EXIT_OVERLOADED, "the server kept shedding requests (queue full) after the retries"),
    (EXIT_ACCESS_DENIED, "the server or its gateway refused the credentials (--header, client certificate)"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
)


def exit_code(exc: NerTritonError) -> int:
    """The exit code of an error (most specific class first)."""
    for kind, code in (
        (AccessDeniedError, EXIT_ACCESS_DENIED),
        (OverloadedError, EXIT_OVERLOADED),
        (RequestRejectedError, EXIT_REJECTED),
        (InvalidInputError, EXIT_REJECTED),
        (DeadlineExceededError, EXIT_DEADLINE),
        (ServiceUnavailableError, EXIT_UNAVAILABLE),
    ):
        if isinstance(exc, kind):
            return code
    return EXIT_ERROR


# ------------------------------------------------------------------------------------------- formatting


def as_json(texts: Sequence[str], results: Sequence[Sequence[Entity]]) -> str:
    """``[{"text": ..., "entities": [{"entity", "start", "end", "word", "score"}]}]``."""
    return json.dumps(
        [{"text": t, "entities": [e.as_dict() for e in ents]} for t, ents in zip(texts, results, strict=True)],
        ensure_ascii=False,
        indent=2,
    )


def as_table(texts: Sequence[str], results: Sequence[Sequence[Entity]]) -> str:
    rows = [("#", "entity", "start", "end", "score", "word")]
    for i, ents in enumerate(results):
        for e in ents:
            rows.append((str(i), e.entity, str(e.start), str(e.end), f"{e.score:.3f}", e.word))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    legend = [f"[{i}] {t}" for i, t in enumerate(texts)]
    return "\n".join([*legend, "", *lines])


def read_texts(args: list[str], stdin: TextIO) -> list[str]:
    if args:
        return args
    if stdin.isatty():
        raise ConfigError("give texts as arguments or lines on stdin (see --help).")
    return [line.rstrip("\n") for line in stdin if line.strip()]


def read_documents(args: list[str], stdin: TextIO) -> list[list[str]]:
    """Documents from stdin: one sentence per line, documents separated by blank lines (arguments: one document,
    one sentence each)."""
    if args:
        return [args]
    if stdin.isatty():
        raise ConfigError("give the documents on stdin: one sentence per line, a blank line between documents.")
    documents: list[list[str]] = [[]]
    for line in stdin:
        if line.strip():
            documents[-1].append(line.rstrip("\n"))
        elif documents[-1]:
            documents.append([])
    return [d for d in documents if d]


# ------------------------------------------------------------------------------------- request headers


def parse_headers(items: Sequence[str]) -> dict[str, str]:
    """``name: value`` items (curl's -H form), or ``@FILE`` holding such lines (blank and # lines skipped):
    a token in a file stays out of the process list and the shell history."""
    headers: dict[str, str] = {}
    for item in items:
        if item.startswith("@"):
            path = Path(item[1:])
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ConfigError(f"cannot read the header file {path} ({exc.strerror}).") from exc
            entries = [(f"{path}:{n}", line) for n, line in enumerate(lines, 1) if line.strip()]
            entries = [(where, line) for where, line in entries if not line.lstrip().startswith("#")]
        else:
            entries = [("--header", item)]
        for where, entry in entries:
            name, sep, value = entry.partition(":")
            if not sep or not name.strip():
                raise ConfigError(f"{where}: {entry!r} is not a header: write it as 'name: value'.")
            headers[name.strip().lower()] = value.strip()
    return headers


# ----------------------------------------------------------------------------------- JSON Lines streaming


@dataclass
class Record:
    """One input line and what became of it."""

    line: int
    fields: dict[str, Any]
    entities: list[Entity] | None = None
    error: NerTritonError | None = None

    def as_json(self) -> str:
        out: dict[str, Any] = {"line": self.line, **self.fields}
        if self.error is not None:
            out["error"] = {"kind": type(self.error).__name__, "message": str(self.error)}
        else:
            out["entities"] = [e.as_dict() for e in self.entities or []]
        return json.dumps(out, ensure_ascii=False)


def parse_line(number: int, line: str, input_format: str) -> Record:
    """A text line (``text``) or a JSON object with a string ``text`` (``jsonl``; other keys are echoed)."""
    if input_format == "text":
        return Record(number, {"text": line.rstrip("\r\n")})
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Record(
            number, {}, error=InvalidInputError(f"line {number} is not JSON ({exc.msg} at column {exc.colno}).")
        )
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
        return Record(number, {}, error=InvalidInputError(f'line {number} must be a JSON object with a string "text".'))
    return Record(number, obj)


def batches(stdin: TextIO, max_batch: int) -> Iterator[list[tuple[int, str]]]:
    """Numbered non-blank lines of ``stdin`` in batches: whatever has arrived, up to ``max_batch`` - a file
    goes in full batches, an interactive or slow producer gets each line answered as soon as it comes."""
    lines: queue.Queue[tuple[int, str] | None] = queue.Queue(maxsize=4 * max_batch)

    def read() -> None:
        try:
            for number, line in enumerate(stdin, 1):
                if line.strip():
                    lines.put((number, line))
        finally:
            lines.put(None)

    threading.Thread(target=read, name="ner-client-stdin", daemon=True).start()
    while True:
        item = lines.get()
        if item is None:
            return
        batch = [item]
        while len(batch) < max_batch:
            try:
                item = lines.get_nowait()
            except queue.Empty:
                break
            if item is None:
                yield batch
                return
            batch.append(item)
        yield batch


@dataclass
class StreamResult:
    lines: int = 0
    failed: list[int] = field(default_factory=list)
    worst: int = EXIT_OK


def analyse(client: NerClient, records: list[Record]) -> None:
    """Fill in the entities of ``records`` (one request); a rejected request is retried text by text so that
    one bad line does not fail its neighbours. Unavailable, deadline and access errors propagate."""
    todo = [r for r in records if r.error is None]
    if not todo:
        return
    try:
        for record, entities in zip(todo, client.extract([r.fields["text"] for r in todo]), strict=True):
            record.entities = entities
        return
    except AccessDeniedError:
        raise
    except RequestRejectedError as exc:
        if len(todo) == 1 or isinstance(exc, OverloadedError):
            for record in todo:
                record.error = exc
            return
    for record in todo:
        analyse(client, [record])


def stream(client: NerClient, stdin: TextIO, stdout: TextIO, input_format: str, max_batch: int) -> StreamResult:
    """JSON Lines out, one object per non-blank input line, written and flushed batch by batch."""
    result = StreamResult()
    for batch in batches(stdin, max_batch):
        records = [parse_line(number, line, input_format) for number, line in batch]
        analyse(client, records)
        for record in records:
            stdout.write(record.as_json() + "\n")
            if record.error is not None:
                result.failed.append(record.line)
                result.worst = max(result.worst, exit_code(record.error))
        stdout.flush()
        result.lines += len(records)
    return result


# ------------------------------------------------------------------------------------------- the command


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES)
    return (
        "exit codes:\n" + codes + "\n\n"
        "headers: -H 'authorization: Bearer TOKEN' (repeatable) or -H @FILE with one 'name: value' per line.\n"
        "Triton's own --grpc-restricted-protocol expects the header 'triton-grpc-protocol-<key>'."
    )


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to analyse (default: one text per line on stdin)")
    parser.add_argument(
        "--url",
        default=os.environ.get("NER_URL") or f"127.0.0.1:{os.environ.get('TRITON_GRPC_PORT') or 8001}",
        help=f"gRPC address of the server (default: $NER_URL or {DEFAULT_URL})",
    )
    parser.add_argument("--model", default=ENSEMBLE, help=f"ensemble to call (default: {ENSEMBLE})")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="deadline of each request, retries included, in seconds (30)"
    )
    parser.add_argument("--retries", type=int, default=2, help="retries of a shed request or a restart (2)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per request (64)")
    parser.add_argument(
        "--documents",
        action="store_true",
        help="documents mode: stdin holds one sentence per line and a blank line between documents; each "
        "document's sentences are read together (context) and the entities come back per sentence",
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON array (after all input is read)")
    out.add_argument(
        "--jsonl", action="store_true", help="stream JSON Lines: one object per input line, as lines arrive"
    )
    parser.add_argument(
        "--input-format",
        choices=["text", "jsonl"],
        default="text",
        help="with --jsonl: stdin lines are texts (text) or JSON objects with a 'text' key (jsonl; other keys "
        "are echoed, e.g. an id)",
    )
    tls = parser.add_argument_group("TLS (Triton's --grpc-use-ssl, or a TLS-terminating proxy)")
    tls.add_argument("--ssl", action="store_true", help="use TLS (implied by the options below)")
    tls.add_argument("--root-certificates", type=Path, help="PEM CA bundle that signed the server (default: system)")
    tls.add_argument("--private-key", type=Path, help="PEM private key of a client certificate (mutual TLS)")
    tls.add_argument("--certificate-chain", type=Path, help="PEM client certificate chain (mutual TLS)")
    tls.add_argument("--tls-server-name", help="name to verify in the server certificate (default: host of --url)")
    parser.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE' | @FILE", help="request header"
    )


def _tls(args: argparse.Namespace) -> Tls | None:
    files = (args.root_certificates, args.private_key, args.certificate_chain, args.tls_server_name)
    if not args.ssl and not any(files):
        return None
    return Tls(args.root_certificates, args.private_key, args.certificate_chain, args.tls_server_name)


def _run(args: argparse.Namespace) -> int:
    if args.input_format != "text" and not args.jsonl:
        args.parser.error("--input-format jsonl needs --jsonl")
    if args.documents and args.jsonl:
        args.parser.error("--documents reads whole documents: use it with --json or the table, not --jsonl")
    try:
        if args.documents:
            documents = read_documents(args.texts, sys.stdin)
            texts = [sentence for document in documents for sentence in document]
        else:
            documents, texts = [], [] if args.jsonl else read_texts(args.texts, sys.stdin)
    except ConfigError as exc:
        args.parser.error(str(exc))
    if args.jsonl and args.texts:
        args.parser.error("--jsonl reads stdin: give no texts as arguments")
    try:
        retry = RetryPolicy(retries=max(args.retries, 0))
        with NerClient(
            args.url,
            args.model,
            args.timeout,
            args.batch_size,
            retry,
            tls=_tls(args),
            headers=parse_headers(args.header),
        ) as client:
            if args.jsonl:
                result = stream(client, sys.stdin, sys.stdout, args.input_format, args.batch_size)
                if result.failed:
                    print(f"error: {len(result.failed)} of {result.lines} lines failed", file=sys.stderr)
                return result.worst
            if args.documents:
                results = [ents for doc in client.extract_documents(documents) for ents in doc]
            else:
                results = client.extract(texts)
    except NerTritonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exit_code(exc)
    print(as_json(texts, results) if args.json else as_table(texts, results))
    return EXIT_OK


main = Command(
    "ner-client", "Named entities of texts, from the Triton service.", _add_arguments, _run, epilog=_epilog()
).main


if __name__ == "__main__":
    raise SystemExit(main())
