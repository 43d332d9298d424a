"""Host-wide slots for large requests, shared by every instance (stub process) of a model.

Each python-backend instance is its own process, so a limit on how many large requests run at once must
live outside them: ``slots`` lock files in the temporary directory, taken with ``flock`` (never waited for).
The kernel drops a dead process's locks, so a crashed stub never keeps a slot.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO


class Slot:
    """A held slot; :meth:`release` (or leaving the ``with`` block) frees it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle: IO[bytes] | None = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> Slot:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.release()


class Slots:
    """``count`` slots named by ``key`` (e.g. the model's directory): the same key and count give the same
    slots in every process of the host."""

    def __init__(self, key: str, count: int, directory: Path | None = None) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.directory = (directory or Path(tempfile.gettempdir())) / f"ner-triton-slots-{os.getuid()}" / digest
        self.directory.mkdir(parents=True, exist_ok=True)
        self.paths = [self.directory / f"slot-{i}.lock" for i in range(count)]

    def try_acquire(self) -> Slot | None:
        """A free slot, or None at once when every slot is held."""
        for path in self.paths:
            handle = open(path, "ab")  # noqa: SIM115 - the Slot owns and closes it
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return Slot(handle)
        return None
