"""The worst requests the budgets allow, against a running server: are they bounded, and do short requests keep
their latency meanwhile?

Reads the budgets from ``ner``'s config (``runtime.limits.Limits`` in its parameters), builds the costliest
requests they accept (64 texts of one full window each; one text of ``max_windows`` windows; a mix) and some
just over them (texts near the byte limits; one text over the request's bytes), then runs three phases of the
same length: single sentences alone ("calm"), single sentences while ``attackers`` processes send the worst
requests in turn ("attack"), and single sentences alone again; the attack's p99 is compared with the slower of
the two calm ones (a shared host's own noise drifts). Reports, per worst case, how many were served or refused
with which status and how long the slowest took; the short requests' percentiles in each phase; and the server's
python-backend stubs' resident memory at the start, at peak and 3 s after the attack (when the server runs on
this host).

    ner-worst-case --url 127.0.0.1:8001 --seconds 15 --attackers 3     # or: make worst-case
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from ner_triton.cli import Command, emit_json
from ner_triton.client import text_inputs
from ner_triton.errors import ServiceUnavailableError
from ner_triton.runtime.limits import Limits
from ner_triton.schema import ENSEMBLE

log = logging.getLogger(__name__)

GOOD_TEXT = "Maria Lindqvist visited Madrid on Tuesday."
Sample = tuple[str, float]  # (status: "OK" or the gRPC status name, seconds)


def worst_requests(limits: Limits) -> dict[str, list[str]]:
    """The costliest requests ``limits`` accept, and two just over them (by bytes), by name."""
    width = limits.max_length - 2
    one_window = "word " * width  # one full window per text
    windows = "word " * (limits.max_windows * (width - limits.stride) + limits.stride - 100)
    near_bytes = "word " * (limits.max_text_bytes // 5)
    per_request = max(1, limits.max_request_bytes // limits.max_text_bytes)
    return {
        "texts of one full window": [one_window] * min(limits.max_texts, limits.max_tokens // limits.max_length),
        "one text of max_windows windows": [windows],
        "mix": [one_window] * min(20, limits.max_texts - 1) + [windows[: len(windows) // 3]],
        "texts near the byte limits": [near_bytes] * per_request,
        "just over the request's bytes": [near_bytes] * (per_request + 1),
    }


def call(client: Any, texts: list[str], timeout_s: float = 120.0, model: str = ENSEMBLE) -> Sample:
    """(status, seconds) of one request of ``texts`` to the batching ``model`` (TEXT ``[n, 1]``) through a
    tritonclient gRPC ``client``."""
    import tritonclient.grpc as grpcclient

    inputs = text_inputs(grpcclient, texts, rank=2)
    start = time.perf_counter()
    try:
        client.infer(model, inputs, client_timeout=timeout_s)
        return "OK", time.perf_counter() - start
    except grpcclient.InferenceServerException as exc:
        return str(exc.status()).rsplit(".", 1)[-1], time.perf_counter() - start


def attack(
    url: str, limits: Limits, seconds: float, offset: int, pause_s: float, nice: int, ready: Any = None
) -> list[tuple[str, str, float]]:
    """Send the worst requests in turn for ``seconds``, each ``pause_s`` after the previous one ended: (case,
    status, seconds) of each. The process lowers its own CPU priority by ``nice``: on the server's host the load
    generator's CPU is not the server's cost (real clients run elsewhere), and a refusal comes back within
    milliseconds, so a loop without pause would measure the generator. ``ready``: a barrier shared with the
    measuring process, passed once the process is set up, so the attack phase is all attack."""
    import tritonclient.grpc as grpcclient

    os.nice(nice)
    cases = worst_requests(limits)
    names = sorted(cases)
    names = names[offset % len(names) :] + names[: offset % len(names)]
    with grpcclient.InferenceServerClient(url) as client:
        if ready is not None:
            ready.wait()
        out, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            for name in names:
                out.append((name, *call(client, cases[name])))
                time.sleep(pause_s)
    return out


def server_limits(url: str, model: str = ENSEMBLE) -> Limits:
    """The budgets ``model`` was configured with (its config's parameters)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        config = client.get_model_config(model, as_json=True)["config"]
    except grpcclient.InferenceServerException as exc:
        raise ServiceUnavailableError(
            f"cannot read {model}'s config at {url} ({exc}): start a server with `make serve`."
        ) from exc
    finally:
        client.close()
    return Limits.from_parameters({k: v["string_value"] for k, v in config.get("parameters", {}).items()})


def local_stubs_mib(grpc_port: int) -> Callable[[], float] | None:
    """A function giving the resident memory (MiB) of the python-backend stubs of the tritonserver listening on
    ``grpc_port`` on this host, or None when no such server runs here."""
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "tritonserver":
            continue
        try:
            ports = {c.laddr.port for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            continue
        if grpc_port in ports:
            return Stubs(proc)
    return None


class Stubs:
    """The resident memory of a server's python-backend stubs; the processes are looked up once (a scan of every
    process takes milliseconds, and the measurement runs in the process that times the short requests) and
    again only when one of them ended."""

    def __init__(self, server: psutil.Process) -> None:
        self.server = server
        self.stubs = self._find()

    def _find(self) -> list[psutil.Process]:
        return [c for c in self.server.children(recursive=True) if "stub" in c.name()]

    def __call__(self) -> float:
        try:
            return sum(s.memory_info().rss for s in self.stubs) / 2**20
        except psutil.NoSuchProcess:  # a stub was restarted
            self.stubs = self._find()
            return sum(s.memory_info().rss for s in self.stubs if s.is_running()) / 2**20


@dataclass
class Phase:
    """What one phase saw."""

    good: list[Sample] = field(default_factory=list)
    bad: list[tuple[str, str, float]] = field(default_factory=list)
    peak_mib: float = 0.0

    def good_ms(self, q: float) -> float:
        """A percentile of the answered short requests' latency (a refused one would flatter it)."""
        ok = [dt for status, dt in self.good if status == "OK"]
        return float(np.percentile(ok, q)) * 1e3 if ok else float("nan")

    def summary(self) -> dict[str, float]:
        out = {"requests": len(self.good), "failed": sum(status != "OK" for status, _ in self.good)}
        return {
            **out,
            **{f"p{q}_ms": round(self.good_ms(q), 2) for q in (50, 90, 99)},
            "max_ms": round(self.good_ms(100), 2),
        }


def run_phase(
    url: str, limits: Limits, seconds: float, attackers: int, pause_s: float, nice: int, rss: Callable[[], float] | None
) -> Phase:
    """Single sentences from this process (one at a time) while ``attackers`` processes send the worst requests."""
    import tritonclient.grpc as grpcclient

    phase, stop = Phase(), threading.Event()

    def good_loop() -> list[Sample]:
        out = []
        with grpcclient.InferenceServerClient(url) as client:
            while not stop.is_set():
                out.append(call(client, [GOOD_TEXT]))
                time.sleep(0.01)
        return out

    with (
        multiprocessing.Manager() as manager,
        ThreadPoolExecutor(1) as threads,
        ProcessPoolExecutor(max(attackers, 1)) as processes,
    ):
        ready = manager.Barrier(attackers + 1)
        bad = [processes.submit(attack, url, limits, seconds, i, pause_s, nice, ready) for i in range(attackers)]
        ready.wait(timeout=120)  # every attacker is set up: the phase starts now
        good = threads.submit(good_loop)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if rss is not None:
                phase.peak_mib = max(phase.peak_mib, rss())
            time.sleep(0.1)
        stop.set()
        phase.good = good.result(timeout=seconds + 300)
        phase.bad = [r for f in bad for r in f.result(timeout=seconds + 300)]
    return phase


def measure(
    url: str, seconds: float = 12.0, attackers: int = 3, pause_s: float = 0.02, nice: int = 10
) -> dict[str, Any]:
    """The calm and attack phases against the server at ``url``, as a report (see the module's docstring)."""
    import tritonclient.grpc as grpcclient

    limits = server_limits(url)
    rss = local_stubs_mib(int(url.rsplit(":", 1)[1]))
    with grpcclient.InferenceServerClient(url) as client:
        call(client, [GOOD_TEXT])
    start_mib = rss() if rss else None
    log.info("calm phase: %s s of single sentences", seconds)
    calm = run_phase(url, limits, seconds, 0, pause_s, nice, rss)
    log.info("attack phase: %s s, %d processes sending the worst requests", seconds, attackers)
    attacked = run_phase(url, limits, seconds, attackers, pause_s, nice, rss)
    time.sleep(3)
    after_mib = rss() if rss else None
    log.info("calm phase again: %s s of single sentences", seconds)
    calm_after = run_phase(url, limits, seconds, 0, pause_s, nice, None)
    baseline_ms = max(calm.good_ms(99), calm_after.good_ms(99))  # the host's own noise drifts: the slower calm
    cases: dict[str, dict[str, Any]] = {}
    for name, status, dt in attacked.bad:
        case = cases.setdefault(name, {"statuses": Counter(), "max_s": {}})
        case["statuses"][status] += 1
        case["max_s"][status] = round(max(case["max_s"].get(status, 0.0), dt), 3)
    texts = worst_requests(limits)
    return {
        "limits": limits.to_parameters(),
        "seconds_per_phase": seconds,
        "attackers": attackers,
        "attackers_nice": nice,
        "good": {
            "calm": calm.summary(),
            "attack": attacked.summary(),
            "calm_after": calm_after.summary(),
            "failed": sum(status != "OK" for status, _ in calm.good + attacked.good + calm_after.good),
        },
        "baseline_p99_ms": round(baseline_ms, 2),
        "p99_ratio": attacked.good_ms(99) / baseline_ms,
        "worst": {
            name: {
                "texts": len(texts[name]),
                "bytes": sum(len(t.encode()) for t in texts[name]),
                "statuses": dict(c["statuses"]),
                "max_s": c["max_s"],  # the slowest, per status
            }
            for name, c in sorted(cases.items())
        },
        "stubs_mib": None
        if start_mib is None or after_mib is None
        else {
            "start": round(start_mib),
            "peak": round(max(calm.peak_mib, attacked.peak_mib)),
            "after": round(after_mib),
        },
    }


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC address (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each phase (default: %(default)s)")
    parser.add_argument("--attackers", type=int, default=3, help="processes sending worst requests (default: 3)")
    parser.add_argument("--pause-s", type=float, default=0.02, help="each attacker's pause between requests")
    parser.add_argument(
        "--nice", type=int, default=10, help="CPU priority the attackers lower themselves by (0 on another host)"
    )
    parser.add_argument("--output", type=Path, help="also write the JSON report here")


def _run(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.attackers < 1:
        args.parser.error("--seconds must be > 0 and --attackers >= 1")
    emit_json(measure(args.url, args.seconds, args.attackers, args.pause_s, args.nice), args.output)
    return 0


main = Command("ner-worst-case", __doc__ or "", _add_arguments, _run).main
