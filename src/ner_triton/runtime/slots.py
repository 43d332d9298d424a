"""Host-wide slots for large requests, shared by every instance (stub process) of a model, and the
lower-priority thread large requests run on.

Each python-backend instance is its own process, so a limit on how many large requests run at once must
live outside them: ``slots`` lock files in the temporary directory, taken with ``flock`` (never waited for).
The kernel drops a dead process's locks, so a crashed stub never keeps a slot.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


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


class LowPriority:
    """One worker thread whose CPU priority is ``nice`` steps below the caller's (Linux keeps a nice value per
    thread). Large requests run there, so the scheduler hands the cores to the short requests of the other
    instances first; ``nice=0`` runs everything on the caller's thread."""

    def __init__(self, nice: int) -> None:
        self.nice = nice
        self._pool = ThreadPoolExecutor(1, "ner-bulk", initializer=self._lower) if nice > 0 else None

    def _lower(self) -> None:
        tid = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.nice))
        except OSError as exc:  # not Linux, or a sandbox that refuses it: large requests run at normal priority
            log.warning("cannot lower the bulk thread's priority: %s", exc)

    def __call__(self, fn: Callable[..., T], *args: object) -> T:
        if self._pool is None:
            return fn(*args)
        return self._pool.submit(fn, *args).result()
