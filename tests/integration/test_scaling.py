"""Local multi-replica mode: two real tritonservers behind real nginx (gRPC over HTTP/2).

Both replicas receive traffic through the one proxy address, and requests keep succeeding while a
replica is stopped under load (nginx skips the replica that refuses connections and retries the
request on the other one)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ner_triton.client import NO_RETRY, NerClient, RetryPolicy
from ner_triton.errors import NerTritonError
from ner_triton.loadtest.metrics import scrape
from ner_triton.serving.replicas import ProxySettings, ReplicaSet, nginx_config
from ner_triton.serving.server import (
    ServerSettings,
    free_ports,
    group_members,
    is_our_server,
    is_ready,
    port_is_free,
)
from support import TinyBuild

pytestmark = [pytest.mark.integration, pytest.mark.scaling, pytest.mark.slow]

TEXT = "Maria Lindqvist flew from Oslo to Berlin for ACME."


def served(settings: ServerSettings) -> float:
    return scrape(settings.metrics_url).get("ner", {}).get("nv_inference_request_success", 0.0)


@pytest.fixture(scope="module")
def replicas(tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplicaSet]:
    if shutil.which("nginx") is None:
        pytest.skip("nginx not found: apt-get install nginx-light (.ci/run does)")
    state = tmp_path_factory.mktemp("replicas")
    grpc, http = free_ports(2)
    proxy = ProxySettings(grpc_port=grpc, http_port=http, state_dir=state / "proxy")
    with ReplicaSet(tiny_build.repository, 2, proxy, state) as rs:
        yield rs


def test_both_replicas_receive_traffic_through_the_proxy(replicas: ReplicaSet) -> None:
    before = [served(s) for s in replicas.settings]
    with NerClient(replicas.url) as client:
        for _ in range(40):
            assert client.extract([TEXT])[0], "every answer carries entities"
    deadline = time.monotonic() + 10  # Triton counts a request just after its answer leaves: let the counters settle
    while True:
        gained = [served(s) - b for s, b in zip(replicas.settings, before, strict=True)]
        if sum(gained) >= 40 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sum(gained) == 40 and min(gained) >= 5, f"requests per replica: {gained}"


@contextmanager
def client_load(url: str, retry: RetryPolicy) -> Iterator[tuple[list[int], list[str]]]:
    """4 client threads send requests to ``url`` until the block ends; yields (successes, failure messages),
    filled as they go."""
    ok: list[int] = []
    failed: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with NerClient(url, timeout_s=30, retry=retry) as client:
            while not stop.is_set():
                try:
                    client.extract([TEXT])
                    ok.append(1)
                except NerTritonError as exc:
                    failed.append(str(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        yield ok, failed
    finally:
        stop.set()
        for t in threads:
            t.join(30)


def drive_while(
    replicas: ReplicaSet, action: Callable[[], None], retry: RetryPolicy = NO_RETRY
) -> tuple[int, list[str], float]:
    """4 client threads send requests through the proxy while ``action`` runs in the middle; returns
    (successes, failure messages, requests the second replica served meanwhile)."""
    with client_load(replicas.url, retry) as (ok, failed):
        time.sleep(2.0)
        survivor_before = served(replicas.settings[1])
        action()
        time.sleep(3.0)
    return len(ok), failed, served(replicas.settings[1]) - survivor_before


def test_requests_succeed_while_a_replica_is_drained_and_stopped(replicas: ReplicaSet) -> None:
    ok, failed, survivor = drive_while(replicas, lambda: replicas.stop_replica(0))
    assert ok > 20 and not failed, f"{len(failed)} of {ok + len(failed)} requests failed: {failed[:3]}"
    assert survivor > 10, "the surviving replica took over the traffic"
    replicas.start_replica(0)
    test_both_replicas_receive_traffic_through_the_proxy(replicas)  # back in rotation


def test_a_crashed_replica_is_restarted_and_serves_again_with_zero_failures(replicas: ReplicaSet) -> None:
    """SIGKILL to one tritonserver under load, no draining: nginx retries the requests the dead replica cannot
    take (inference has no side effects), a request whose answer was cut off mid-stream reaches the client as
    UNAVAILABLE, which the client's RetryPolicy retries: the caller sees no failure. The supervisor reaps the dead
    server's python backend stubs, restarts it on its ports, and nginx sends it traffic again."""
    proc = replicas.servers[0].process
    assert proc is not None
    old_pid, restarts = proc.pid, replicas.restarts[0]
    stubs = group_members(old_pid)
    assert len(stubs) > 1, "the server runs python backend stubs in its process group"
    with client_load(replicas.url, RetryPolicy()) as (ok, failed):
        time.sleep(1.0)
        replicas.kill_replica(0)
        killed_at = time.monotonic()
        deadline = killed_at + 120
        while replicas.restarts[0] == restarts or not is_ready(replicas.settings[0]):
            assert time.monotonic() < deadline, "the supervisor did not restart the killed replica within 120 s"
            time.sleep(0.2)
        back_s = time.monotonic() - killed_at
        new_proc = replicas.servers[0].process
        assert new_proc is not None and new_proc.pid != old_pid
        assert group_members(old_pid) == [], "the dead server's stubs were reaped"
        served_before = served(replicas.settings[0])  # a fresh server: counts from 0
        time.sleep(4.0)
        served_after = served(replicas.settings[0])
    gained = served_after - served_before
    print(f"crash + restart: {len(ok)} requests ok, {len(failed)} failed; ready again {back_s:.1f} s after the "
          f"kill; restarted replica served {gained:.0f} in 4 s; stubs: {len(stubs) - 1}")  # fmt: skip
    assert ok and not failed, f"{len(failed)} of {len(ok) + len(failed)} requests failed: {failed[:3]}"
    assert gained > 5, "nginx sends the restarted replica traffic again"


def test_proxy_config_lists_every_replica_for_grpc_and_http(tmp_path: Path) -> None:
    replicas = [ServerSettings(grpc_port=9001 + i, http_port=9101 + i, metrics_port=9201 + i) for i in range(3)]
    text = nginx_config(ProxySettings(grpc_port=7001, http_port=7000, state_dir=tmp_path), replicas)
    assert "listen 127.0.0.1:7001 http2;" in text and "grpc_pass grpc://triton_grpc;" in text
    for r in replicas:
        assert f"server 127.0.0.1:{r.grpc_port} " in text and f"server 127.0.0.1:{r.http_port} " in text
        assert str(r.metrics_port) not in text  # Prometheus scrapes each replica, not the proxy


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_replicas_command_stops_servers_stubs_and_nginx_on_a_signal(
    tiny_build: TinyBuild, tmp_path: Path, sig: signal.Signals
) -> None:
    if shutil.which("nginx") is None:
        pytest.skip("nginx not found: apt-get install nginx-light (.ci/run does)")
    grpc, http = free_ports(2)
    exe = Path(sys.executable).parent / "ner-replicas"
    cmd = [str(exe), "run", "--replicas", "1", "--grpc-port", str(grpc), "--http-port", str(http),
           "--repository", str(tiny_build.repository)]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while port_is_free("127.0.0.1", grpc):
            assert proc.poll() is None and time.monotonic() < deadline, "ner-replicas run did not start"
            time.sleep(0.5)
        with NerClient(f"127.0.0.1:{grpc}", timeout_s=30) as client:
            assert client.extract([TEXT])[0]
        children = _children(proc.pid)
        (server,) = [p for p in children if is_our_server(p)]
        stubs = group_members(server)
        nginx = int((tmp_path / ".triton" / "proxy" / "nginx.pid").read_text())
        assert len(stubs) > 1 and _alive(nginx)
        proc.send_signal(sig)
        assert proc.wait(90) == 0, proc.stdout.read() if proc.stdout else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    left = [p for p in (*stubs, nginx) if _alive(p)]
    assert not left, f"still running after {sig.name}: {left}"
    assert port_is_free("127.0.0.1", grpc) and port_is_free("127.0.0.1", http)
