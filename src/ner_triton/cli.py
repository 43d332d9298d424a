"""One command-line front: the runner every ``ner-*`` console script goes through.

A command module defines what is its own - its arguments and what it does - and hands both to
:class:`Command`; the runner does the rest the same way for all of them: ``--help`` and ``--version``,
logging set-up (``--log-level``), and errors. An error this package raises on purpose
(:class:`~ner_triton.errors.NerTritonError`) says what was wrong and how to fix it, so it is printed as
``error: ...`` on stderr, without a traceback, and the command exits with :data:`EXIT_ERROR`.

    def add_arguments(parser): parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    def run(args) -> int | None: ...
    main = Command("ner-example", __doc__, add_arguments, run).main     # pyproject: ner-example = "mod:main"
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ner_triton import __version__
from ner_triton.errors import NerTritonError
from ner_triton.logs import setup_logging

EXIT_OK = 0
EXIT_ERROR = 2  # a NerTritonError: the message names the fix
EXIT_INTERRUPTED = 130

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def emit_json(result: Any, output: Path | None) -> None:
    """Print a command's result as JSON, and write the same text to ``output`` when one is given."""
    text = json.dumps(result, indent=2)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n", encoding="utf-8")
    print(text)


def summary(doc: str | None) -> str:
    """The first paragraph of a module docstring: the command's one-line description."""
    return (doc or "").strip().split("\n\n")[0]


@dataclass(frozen=True)
class Command:
    """A console script: its name, description, arguments and action."""

    prog: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]
    epilog: str | None = None

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            prog=self.prog,
            description=summary(self.description),
            epilog=self.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("--version", action="version", version=f"%(prog)s (ner-triton) {__version__}")
        parser.add_argument("--log-level", choices=LOG_LEVELS, default="INFO", help="default: INFO")
        self.add_arguments(parser)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        """Parse ``argv`` (default: ``sys.argv[1:]``), set up logging, run; returns the exit code."""
        parser = self.parser()
        args = parser.parse_args(argv)
        setup_logging(getattr(logging, args.log_level))
        args.parser = parser  # for commands that report a usage error themselves (parser.error)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # as given, for reports that record the command
        try:
            return int(self.run(args) or EXIT_OK)
        except NerTritonError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print(f"{self.prog}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
