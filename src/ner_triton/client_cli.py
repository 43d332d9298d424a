"""``ner-client``: entities of texts from a running NER server, as a table or JSON.

ner-client "Angela Merkel met Emmanuel Macron in Paris."
cat sentences.txt | ner-client --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from ner_triton.cli import Command
from ner_triton.client import DEFAULT_URL, NerClient, RetryPolicy
from ner_triton.decoding import Entity
from ner_triton.schema import ENSEMBLE


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
        raise SystemExit("ner-client: give texts as arguments or lines on stdin (see --help).")
    return [line.rstrip("\n") for line in stdin if line.strip()]


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to analyse (default: one text per line on stdin)")
    parser.add_argument(
        "--url",
        default=os.environ.get("NER_URL") or f"127.0.0.1:{os.environ.get('TRITON_GRPC_PORT') or 8001}",
        help=f"gRPC address of the server (default: $NER_URL or {DEFAULT_URL})",
    )
    parser.add_argument("--model", default=ENSEMBLE, help=f"ensemble to call (default: {ENSEMBLE})")
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per request in seconds (default: 30)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _run(args: argparse.Namespace) -> int:
    texts = read_texts(args.texts, sys.stdin)
    with NerClient(args.url, args.model, args.timeout, retry=RetryPolicy()) as client:
        results = client.extract(texts)
    print(as_json(texts, results) if args.json else as_table(texts, results))
    return 0


main = Command("ner-client", "Named entities of texts, from the Triton service.", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
