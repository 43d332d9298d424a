"""Start and stop a real ``tritonserver`` (the one bundled in the ``nvidia-pytriton`` wheel).

The wheel carries a complete server with the python backend. What it needs to run here (see
docs/serving.md): the python backend stub for the running Python copied next to the backend,
and this virtual environment's ``bin/`` first on ``PATH`` so the stub finds our site-packages.

``ner-serve start`` launches the server in the background on loopback, waits until it is ready
and returns; ``ner-serve stop`` stops it. Errors name the fix: a port already taken, an empty
repository (run ``make build``), a model that failed to load (Triton's reason is shown).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ner_triton.cli import Command
from ner_triton.errors import ConfigError, ServerError
from ner_triton.variants import VARIANTS

log = logging.getLogger(__name__)

STATE_DIR = Path(".triton")
ADMIN_HEADER = "ner-admin-key"  # HTTP header; gRPC metadata key is GRPC_ADMIN_HEADER (Triton adds a prefix)
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
# Triton 2.51's names (tritonserver --help lists: health, metadata, inference, shared-memory, model-config,
# model-repository, statistics, trace, logging). With a key these need the admin header; the rest stay open.
RESTRICTED = "model-repository,shared-memory,logging,trace"
MODEL_CONTROL_MODES = ("poll", "none", "explicit")
# Triton's rate limiter, for the instance priorities of the one-step ``ner`` (model_configs.first_choice_groups): a
# batch goes to the free instance with the lowest executions x priority. Without resources in any config it never
# holds a batch back. Every server command of the project carries it (compose, Kubernetes, Helm: tests/unit).
RATE_LIMIT = "--rate-limit=execution_count"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a port number; unset it to use {default}.") from exc
    if not 0 < value < 65536:
        raise ConfigError(f"{name}={value} is not a port number (1-65535).")
    return value


@dataclass(frozen=True)
class ServerSettings:
    """Where the server listens and what it serves. Loopback unless ``host`` says otherwise."""

    repository: Path = Path("model_repository")
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    startup_timeout_s: float = 120.0
    log_file: Path = STATE_DIR / "tritonserver.log"
    pid_file: Path = STATE_DIR / "tritonserver.pid"
    # "poll": the server watches the repository and swaps in new model versions (a rebuild while
    # serving updates the model without downtime); "none": load once at start; "explicit": load every model
    # at start (``--load-model=*``), then change only when told through the repository API (``ner-rollout``).
    # In every mode a model loads the version its config pins (``version_policy``, written by the rollout).
    model_control_mode: str = "poll"
    poll_seconds: int = 2
    # With a key, Triton's model-repository, shared-memory, logging and trace APIs (RESTRICTED) need the header
    # ADMIN_HEADER=<key> (--grpc-restricted-protocol / --http-restricted-api); inference and health stay open.
    admin_key: str | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.model_control_mode not in MODEL_CONTROL_MODES:
            raise ConfigError(
                f"model control mode {self.model_control_mode!r} must be one of {', '.join(MODEL_CONTROL_MODES)} "
                "(TRITON_MODEL_CONTROL)."
            )

    @classmethod
    def from_env(cls) -> ServerSettings:
        """Ports from ``TRITON_GRPC_PORT``/``TRITON_HTTP_PORT``/``TRITON_METRICS_PORT``, repository from
        ``MODEL_REPOSITORY``, ``TRITON_MODEL_CONTROL`` (poll | none | explicit), ``TRITON_ADMIN_KEY``."""
        base = cls()
        repo = os.environ.get("MODEL_REPOSITORY", "").strip()
        control = os.environ.get("TRITON_MODEL_CONTROL", "").strip() or base.model_control_mode
        if control not in MODEL_CONTROL_MODES:
            raise ConfigError(
                f"TRITON_MODEL_CONTROL={control!r} must be one of {', '.join(MODEL_CONTROL_MODES)}; unset it for poll."
            )
        return replace(
            base,
            repository=Path(repo) if repo else base.repository,
            grpc_port=_env_int("TRITON_GRPC_PORT", base.grpc_port),
            http_port=_env_int("TRITON_HTTP_PORT", base.http_port),
            metrics_port=_env_int("TRITON_METRICS_PORT", base.metrics_port),
            model_control_mode=control,
            admin_key=os.environ.get("TRITON_ADMIN_KEY", "").strip() or None,
        )

    @classmethod
    def on_free_ports(cls, repository: Path, state_dir: Path, **overrides: Any) -> ServerSettings:
        """Loopback server on three ports free right now, logging into ``state_dir`` (tests, sweeps)."""
        grpc, http, metrics = free_ports(3)
        return cls(
            repository=repository,
            grpc_port=grpc,
            http_port=http,
            metrics_port=metrics,
            log_file=state_dir / "tritonserver.log",
            pid_file=state_dir / "tritonserver.pid",
            **overrides,
        )

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"


@dataclass(frozen=True)
class TritonInstall:
    """The server binary and backend directory inside the installed nvidia-pytriton wheel."""

    binary: Path
    backends: Path

    @classmethod
    def find(cls) -> TritonInstall:
        try:
            import pytriton
        except ImportError as exc:
            raise ServerError(
                "nvidia-pytriton is not installed: run `make setup` (it installs the serve extra)."
            ) from exc
        root = Path(pytriton.__file__).parent / "tritonserver"
        install = cls(root / "bin" / "tritonserver", root / "backends")
        if not install.binary.is_file():
            raise ServerError(f"no tritonserver binary at {install.binary}: reinstall nvidia-pytriton.")
        install.ensure_stub(root)
        return install

    def ensure_stub(self, root: Path) -> None:
        """Copy the python backend stub for this Python next to the backend (once)."""
        dst = self.backends / "python" / "triton_python_backend_stub"
        if dst.is_file():
            return
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        src = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not src.is_file():
            raise ServerError(f"nvidia-pytriton has no python backend stub for Python {version} ({src}).")
        shutil.copy2(src, dst)
        dst.chmod(0o755)


def stub_environment() -> dict[str, str]:
    """Environment for tritonserver so the python backend stub runs *this* Python.

    The stub finds site-packages through the ``python3`` first on ``PATH`` (so the venv's ``bin/``
    goes first), and it links ``libpython3.11.so``: when the running interpreter has its own
    shared libpython (pyenv, conda), that one must win over the system's, or C extensions built
    for this interpreter fail to import (seen: ``_ssl ... undefined symbol: _PyModule_Add``).
    """
    import sysconfig

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and Path(libdir).is_dir():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def precompile(repository: Path) -> None:
    """Byte-compile every model.py of ``repository`` now, with this interpreter (the stub's).

    Otherwise the stub writes ``__pycache__`` into the version directory when it imports model.py, a
    polling server sees that as a change and reloads the model once (seen: statistics reset mid-run).
    The python backend stub ignores PYTHONDONTWRITEBYTECODE.
    """
    import compileall

    compileall.compile_dir(str(repository), quiet=1, workers=1)


def _short(reason: str, limit: int = 400) -> str:
    """First part of a Triton error: drop the Python traceback (``At: ...``) and long tails."""
    reason = reason.replace("\\n", "\n").split("\n\nAt:")[0].split("\nAt:")[0].strip()
    return reason if len(reason) <= limit else reason[:limit] + " ..."


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports that are free right now (for tests)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((host, 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def check_repository(repository: Path) -> list[str]:
    """Names of the models in ``repository``; raises when it cannot be served yet."""
    if not repository.is_dir():
        raise ServerError(f"model repository {repository} does not exist: run `make build` first.")
    models = sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))
    if not models:
        raise ServerError(f"model repository {repository} holds no model: run `make build` first.")
    missing = [
        str(p.parent / "<version>" / v.served_file)
        for v in VARIANTS.values()
        if (p := repository / v.triton_name / "config.pbtxt").is_file()
        and not any(d.name.isdigit() and (d / v.served_file).is_file() for d in p.parent.iterdir())
    ]
    if missing:
        raise ServerError(
            f"model repository {repository} has configs but no weights ({', '.join(missing)} missing): "
            "run `make build` (it installs the ONNX models into the repository)."
        )
    return models


def _http_json(
    url: str, timeout: float = 2.0, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, object]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body) if body else None
        except json.JSONDecodeError:
            return exc.code, body.decode("utf-8", "replace")


def is_ready(settings: ServerSettings) -> bool:
    try:
        status, _ = _http_json(f"{settings.http_url}/v2/health/ready", timeout=1.0)
    except (OSError, urllib.error.URLError):
        return False
    return status == 200


def load_failures(settings: ServerSettings, log_text: str) -> list[str]:
    """Why models failed to load: from the repository index when the server answers, else the log."""
    reasons = []
    try:
        headers = {ADMIN_HEADER: settings.admin_key} if settings.admin_key else None
        _, index = _http_json(f"{settings.http_url}/v2/repository/index", data=b"{}", headers=headers)
        for entry in index if isinstance(index, list) else []:
            if entry.get("state") == "UNAVAILABLE" and entry.get("reason"):
                reasons.append(f"{entry['name']}: {_short(entry['reason'])}")
    except (OSError, urllib.error.URLError, json.JSONDecodeError):
        pass
    if not reasons:
        for line in log_text.splitlines():
            if "failed to load '" in line and "version" in line:
                reasons.append(_short(line.split("] ", 1)[-1].strip('"')))
        if not reasons:
            reasons = [_short(line) for line in log_text.splitlines() if line.startswith("error:")]
    return reasons[-10:]


class TritonServer:
    """A ``tritonserver`` child process (also usable as a context manager in tests)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.process: subprocess.Popen[bytes] | None = None

    def command(self, install: TritonInstall) -> list[str]:
        s = self.settings
        return [
            str(install.binary),
            f"--model-repository={s.repository.resolve()}",
            f"--backend-directory={install.backends}",
            f"--grpc-address={s.host}",
            f"--http-address={s.host}",
            f"--grpc-port={s.grpc_port}",
            f"--http-port={s.http_port}",
            f"--metrics-port={s.metrics_port}",
            f"--model-control-mode={s.model_control_mode}",
            *([f"--repository-poll-secs={s.poll_seconds}"] if s.model_control_mode == "poll" else []),
            *(
                ["--load-model=*"]
                if s.model_control_mode == "explicit" and not any(a.startswith("--load-model") for a in s.extra_args)
                else []
            ),
            *(
                [
                    f"--grpc-restricted-protocol={RESTRICTED}:{ADMIN_HEADER}={s.admin_key}",
                    f"--http-restricted-api={RESTRICTED}:{ADMIN_HEADER}={s.admin_key}",
                ]
                if s.admin_key
                else []
            ),
            RATE_LIMIT,
            "--allow-metrics=true",
            "--allow-cpu-metrics=true",
            "--exit-timeout-secs=5",
            "--log-verbose=0",
            *s.extra_args,
        ]

    def start(self) -> TritonServer:
        s = self.settings
        check_repository(s.repository)
        taken = [p for p in (s.grpc_port, s.http_port, s.metrics_port) if not port_is_free(s.host, p)]
        if taken:
            raise ServerError(
                f"port(s) {taken} on {s.host} are already in use (is a server running? `make stop`), "
                "or choose others with TRITON_GRPC_PORT / TRITON_HTTP_PORT / TRITON_METRICS_PORT."
            )
        install = TritonInstall.find()
        precompile(s.repository)
        env = stub_environment()
        s.log_file.parent.mkdir(parents=True, exist_ok=True)
        with s.log_file.open("wb") as out:
            self.process = subprocess.Popen(
                self.command(install), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        log.info("tritonserver pid %d starting on %s (log: %s)", self.process.pid, s.grpc_url, s.log_file)
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        s, proc = self.settings, self.process
        assert proc is not None
        deadline = time.monotonic() + s.startup_timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                text = s.log_file.read_text(encoding="utf-8", errors="replace")
                reasons = load_failures(s, text) or text.splitlines()[-15:]
                raise ServerError(
                    f"tritonserver exited with code {proc.returncode} before it was ready. Triton says:\n  "
                    + "\n  ".join(reasons)
                    + f"\n(full log: {s.log_file})"
                )
            if is_ready(s):
                log.info("tritonserver ready: grpc %s, http %s, metrics %s", s.grpc_url, s.http_url, s.metrics_url)
                return
            time.sleep(0.25)
        reasons = load_failures(s, s.log_file.read_text(encoding="utf-8", errors="replace"))
        self.stop()
        raise ServerError(
            f"tritonserver was not ready within {s.startup_timeout_s:.0f} s"
            + (": " + "; ".join(reasons) if reasons else "")
            + f" (log: {s.log_file})."
        )

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Triton finishes requests in flight and stops its stubs), SIGKILL after ``timeout``; then
        whatever is left of its process group (python backend stubs) is reaped."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        reap_group(proc.pid)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def group_members(pgid: int) -> list[int]:
    """Pids of the live processes in process group ``pgid`` (from /proc; empty where there is no /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="utf-8", errors="replace").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def reap_group(pgid: int) -> list[int]:
    """SIGKILL what is left of a stopped server's process group: its python backend stubs, which outlive a
    server that was killed (each holds its model's memory). The server runs in its own session
    (``start_new_session``), so the group is ours alone. Returns the pids that were signalled."""
    left = group_members(pgid)
    if left:
        log.warning("reaping %d process(es) left by tritonserver %d: %s", len(left), pgid, left)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return []
    return left


def is_our_server(pid: int) -> bool:
    """True when ``pid`` is alive and runs a ``tritonserver`` binary (its /proc/<pid>/cmdline), so that a stale
    pid file never makes ``make stop`` signal an unrelated process that got the same pid."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(argv) and Path(argv[0].decode("utf-8", "replace")).name == "tritonserver"


def start_background(settings: ServerSettings) -> int:
    """``make serve``: start, wait until ready, record the pid, leave it running."""
    server = TritonServer(settings).start()
    assert server.process is not None
    settings.pid_file.write_text(str(server.process.pid), encoding="utf-8")
    return server.process.pid


def stop_background(settings: ServerSettings, timeout: float = 20.0) -> bool:
    """``make stop``: stop the server recorded in the pid file; False when none was running."""
    if not settings.pid_file.is_file():
        return False
    raw = settings.pid_file.read_text(encoding="utf-8").strip()
    settings.pid_file.unlink()
    if not raw.isdigit() or not is_our_server(pid := int(raw)):
        log.warning("pid file %s named %r, which is no running tritonserver (stale): nothing signalled",
                    settings.pid_file, raw)  # fmt: skip
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_our_server(pid):  # gone (or a zombie of a parent that exited: cmdline is empty)
            reap_group(pid)
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument(
        "--repository", type=Path, help="model repository (default: $MODEL_REPOSITORY or model_repository)"
    )


def _run(args: argparse.Namespace) -> int:
    settings = ServerSettings.from_env()
    if args.repository:
        settings = replace(settings, repository=args.repository)
    if args.action == "start":
        pid = start_background(settings)
        print(f"tritonserver running (pid {pid}): grpc {settings.grpc_url}, http {settings.http_url}")
    elif args.action == "stop":
        print("tritonserver stopped" if stop_background(settings) else "no tritonserver was running")
    else:
        ready = is_ready(settings)
        print(f"tritonserver at {settings.http_url}: {'ready' if ready else 'not ready'}")
        return 0 if ready else 1
    return 0


main = Command("ner-serve", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
