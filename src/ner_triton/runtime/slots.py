"""Host-wide slots for large requests, shared by every instance (stub process) of a model, the
lower-priority thread large requests run on, and which instances are running a batch right now (:class:`Activity`).

Each python-backend instance is its own process, so a limit on how many large requests run at once must
live outside them: ``slots`` lock files in the temporary directory, taken with ``flock`` (never waited for).
The kernel drops a dead process's locks, so a crashed stub never keeps a slot.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
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


class Activity:
    """Which instances of a model (stub processes, same ``key``) run a batch right now, host-wide.

    Each instance holds an exclusive ``flock`` on its own file in a shared directory while it runs a batch
    (:meth:`running`); :meth:`others_busy` counts the other instances' files it cannot lock shared at once. Files of
    processes that are gone are removed when the directory is scanned (at most every ``rescan_s``). A few
    microseconds of system calls per batch, no shared memory, nothing a crash can leave locked.
    """

    def __init__(self, key: str, directory: Path | None = None, rescan_s: float = 1.0) -> None:
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        self.directory = (directory or Path(tempfile.gettempdir())) / f"ner-triton-busy-{os.getuid()}" / digest
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"{os.getpid()}-{id(self):x}.lock"
        self._own = open(self.path, "wb")  # noqa: SIM115 - held for the life of the instance
        self._others: dict[Path, IO[bytes]] = {}
        self._rescan_s = rescan_s
        self._scanned = 0.0

    def _scan(self) -> None:
        self._scanned = time.monotonic()
        present = set(self.directory.glob("*.lock")) - {self.path}
        for path in list(self._others):
            if path not in present:
                self._others.pop(path).close()
        for path in present - set(self._others):
            pid = path.name.split("-", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            with contextlib.suppress(OSError):
                self._others[path] = open(path, "rb")  # noqa: SIM115 - closed when the file goes

    def others_busy(self) -> int:
        """How many other instances run a batch at this moment."""
        if time.monotonic() - self._scanned > self._rescan_s:
            self._scan()
        busy = 0
        for handle in self._others.values():
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                busy += 1
            else:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return busy

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """This instance runs a batch for the duration of the block."""
        fcntl.flock(self._own, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._own, fcntl.LOCK_UN)

    def close(self) -> None:
        self._own.close()
        with contextlib.suppress(OSError):
            self.path.unlink()
        for handle in self._others.values():
            handle.close()
        self._others.clear()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
