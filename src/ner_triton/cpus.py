"""How many CPUs this process may use, and how many instances of the one-step ``ner`` that makes.

The CPU python model ``ner`` scales by instances (separate stubs, one ONNX Runtime thread each), not by
intra-op threads (docs/scaling.md): the right instance count is the number of CPUs the container may use.
That is the smallest of

* the cgroup CPU quota (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) of this
  process's cgroup and of every cgroup above it, rounded up (a Kubernetes ``limits.cpu: 3500m`` gives 4), and
* the CPUs the scheduler lets this process run on (``os.sched_getaffinity``; ``docker run --cpuset-cpus``).

One setting overrides it: ``NER_INSTANCES`` (a count, or ``auto`` for the detection above). It is read where the
repository is written (:mod:`ner_triton.repository.model_configs`, only when set) and where a server starts
(:mod:`ner_triton.serving.entrypoint`, the container's entrypoint: set or detected).

Where the detection runs (``auto``, or the entrypoint without ``NER_INSTANCES``) and ``NER_SWEEP`` names a
``make sweep`` report (``benchmarks/sweep/latest.json``) measured on this very host - the same CPU model and CPU
count - its best configuration wins: that many instances, each with that many ONNX Runtime threads
(``NER_ORT_THREADS``, which always overrides the threads). A report of another host is ignored (logged).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
from collections.abc import Mapping
from pathlib import Path

from ner_triton.errors import ConfigError

log = logging.getLogger(__name__)

INSTANCES_ENV = "NER_INSTANCES"
THREADS_ENV = "NER_ORT_THREADS"
SWEEP_ENV = "NER_SWEEP"
# CPU flags that decide ONNX Runtime's INT8 kernels (VNNI, AMX, AVX-512, AVX2), as /proc/cpuinfo names them
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
AUTO = "auto"
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """controller -> this process's cgroup path, from /proc/self/cgroup (``""`` is the v2 unified hierarchy)."""
    out: dict[str, str] = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out[controller] = parts[2]
    return out


def _ancestors(root: Path, cgroup: str) -> list[Path]:
    """``root/cgroup`` and every directory above it up to ``root`` that exists (inside a container with its own
    cgroup namespace the path is ``/`` and only ``root`` itself is there)."""
    parts = [p for p in cgroup.split("/") if p]
    dirs = [root.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _v2_quota(d: Path) -> float | None:
    raw = _read(d / "cpu.max")
    if not raw:
        return None
    quota, _, period = raw.partition(" ")
    if quota == "max" or not period:
        return None
    return int(quota) / int(period)


def _v1_quota(d: Path) -> float | None:
    quota, period = _read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")
    if quota is None or period is None or int(quota) <= 0 or int(period) <= 0:
        return None
    return int(quota) / int(period)


def cgroup_cpu_quota(cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota (in CPUs, e.g. 3.5) on this process's cgroup or an ancestor; None when unlimited."""
    paths = _cgroup_paths(proc_cgroup)
    quotas: list[float] = []
    if (cgroup_root / "cgroup.controllers").is_file():  # v2
        for d in _ancestors(cgroup_root, paths.get("", "/")):
            q = _v2_quota(d)
            if q is not None:
                quotas.append(q)
    else:  # v1: the cpu controller is mounted at cpu/, cpu,cpuacct/ or cpuacct,cpu/
        for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
            base = cgroup_root / mount
            if base.is_dir():
                for d in _ancestors(base, paths.get("cpu", "/")):
                    q = _v1_quota(d)
                    if q is not None:
                        quotas.append(q)
                break
    return min(quotas) if quotas else None


def affinity_cpus() -> int:
    """CPUs the scheduler lets this process run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def available_cpus(
    cgroup_root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP, affinity: int | None = None
) -> int:
    """CPUs this process may use: the cgroup quota rounded up, at most the affinity set, at least 1."""
    cpus = affinity if affinity is not None else affinity_cpus()
    quota = cgroup_cpu_quota(cgroup_root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota - 1e-9))
    return max(1, cpus)


def parse_instances(raw: str | None) -> int | None:
    """``NER_INSTANCES``'s value: a count >= 1, or None for ``auto`` / unset (detect)."""
    raw = (raw or "").strip()
    if not raw or raw.lower() == AUTO:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{INSTANCES_ENV}={raw!r} must be a whole number of instances >= 1 or {AUTO!r} "
            "(one instance per CPU the container may use); unset it for auto."
        )
    return value


def _cpuinfo(key: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` shows it (/proc/cpuinfo on Linux; the platform's word elsewhere)."""
    return _cpuinfo("model name") or platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU has (empty where /proc/cpuinfo is missing)."""
    have = set((_cpuinfo("flags") or "").split())
    return [f for f in CPU_FLAGS if f in have]


def sweep_choice(env: Mapping[str, str] | None = None, cpus: int | None = None) -> tuple[int, int] | None:
    """The best ``(instances, threads)`` of the ``make sweep`` report that ``NER_SWEEP`` names, when it was measured
    on this host (same CPU model and count); None without one, or for another host's."""
    env = os.environ if env is None else env
    raw = (env.get(SWEEP_ENV) or "").strip()
    if not raw:
        return None
    path = Path(raw)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        host, choice = report["host"], report["best"]
        cpus = available_cpus() if cpus is None else cpus
        if host["cpus"] != cpus or host["cpu_model"] != cpu_model():
            log.info("%s was measured on %d x %s, this host has %d x %s: not used", path, host["cpus"],
                     host["cpu_model"], cpus, cpu_model())  # fmt: skip
            return None
        return int(choice["instances"]), int(choice["threads"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"{SWEEP_ENV}={path} is not a readable `make sweep` report ({exc!r}): run `make sweep` again or unset it."
        ) from exc


def instances_from_env(env: Mapping[str, str] | None = None) -> int | None:
    """The instance count ``NER_INSTANCES`` asks for (``auto``: this host's sweep, else detected here), or None
    when it is not set."""
    env = os.environ if env is None else env
    raw = env.get(INSTANCES_ENV)
    if raw is None or not raw.strip():
        return None
    return parse_instances(raw) or _detected(env)


def _detected(env: Mapping[str, str]) -> int:
    choice = sweep_choice(env)
    return choice[0] if choice else available_cpus()


def instance_count(env: Mapping[str, str] | None = None) -> int:
    """``NER_INSTANCES`` when set, else this host's sweep's best count, else one instance per CPU it may use."""
    env = os.environ if env is None else env
    return instances_from_env(env) or _detected(env)


def threads_from_env(env: Mapping[str, str] | None = None) -> int | None:
    """ONNX Runtime threads per ``ner`` instance: ``NER_ORT_THREADS`` when set; with ``NER_INSTANCES=auto`` this
    host's sweep's best threads; else None (the repository's own)."""
    env = os.environ if env is None else env
    raw = (env.get(THREADS_ENV) or "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(f"{THREADS_ENV}={raw!r} must be a whole number of threads >= 1; unset it for the default")
        return int(raw)
    if (env.get(INSTANCES_ENV) or "").strip().lower() == AUTO:
        choice = sweep_choice(env)
        return choice[1] if choice else None
    return None
