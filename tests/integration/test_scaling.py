"""Local multi-replica mode: two real tritonservers behind real nginx (gRPC over HTTP/2).

Both replicas receive traffic through the one proxy address, and requests keep succeeding while a
replica is stopped under load (nginx skips the replica that refuses connections and retries the
request on the other one)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ner_triton.client import NO_RETRY, NerClient, RetryPolicy
from ner_triton.errors import NerTritonError
from ner_triton.loadtest.metrics import scrape
from ner_triton.serving.replicas import ProxySettings, ReplicaSet, nginx_config
from ner_triton.serving.server import ServerSettings, free_ports
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
    gained = [served(s) - b for s, b in zip(replicas.settings, before, strict=True)]
    assert sum(gained) == 40 and min(gained) >= 5, f"requests per replica: {gained}"


def drive_while(
    replicas: ReplicaSet, action: Callable[[], None], retry: RetryPolicy = NO_RETRY
) -> tuple[int, list[str], float]:
    """4 client threads send requests through the proxy while ``action`` runs in the middle; returns
    (successes, failure messages, requests the second replica served meanwhile)."""
    ok: list[int] = []
    failed: list[str] = []
    stop = threading.Event()

    def load() -> None:
        with NerClient(replicas.url, timeout_s=30, retry=retry) as client:
            while not stop.is_set():
                try:
                    client.extract([TEXT])
                    ok.append(1)
                except NerTritonError as exc:
                    failed.append(str(exc))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    survivor_before = served(replicas.settings[1])
    action()
    time.sleep(3.0)
    stop.set()
    for t in threads:
        t.join(30)
    return len(ok), failed, served(replicas.settings[1]) - survivor_before


def test_requests_succeed_while_a_replica_is_drained_and_stopped(replicas: ReplicaSet) -> None:
    ok, failed, survivor = drive_while(replicas, lambda: replicas.stop_replica(0))
    assert ok > 20 and not failed, f"{len(failed)} of {ok + len(failed)} requests failed: {failed[:3]}"
    assert survivor > 10, "the surviving replica took over the traffic"
    replicas.start_replica(0)
    test_both_replicas_receive_traffic_through_the_proxy(replicas)  # back in rotation


def test_requests_succeed_when_a_replica_crashes(replicas: ReplicaSet) -> None:
    """SIGKILL, no draining: nginx retries the requests the dead replica cannot take (inference has no side
    effects, so retrying a request that was sent is safe). A request whose answer was cut off mid-stream
    reaches the client as UNAVAILABLE (HTTP 502), which the client's RetryPolicy retries: the caller
    sees no failure."""
    ok, failed, survivor = drive_while(replicas, lambda: replicas.kill_replica(0), RetryPolicy())
    assert ok > 20 and not failed, f"{len(failed)} of {ok + len(failed)} requests failed: {failed[:3]}"
    assert survivor > 10
    replicas.start_replica(0)


def test_proxy_config_lists_every_replica_for_grpc_and_http(tmp_path: Path) -> None:
    replicas = [ServerSettings(grpc_port=9001 + i, http_port=9101 + i, metrics_port=9201 + i) for i in range(3)]
    text = nginx_config(ProxySettings(grpc_port=7001, http_port=7000, state_dir=tmp_path), replicas)
    assert "listen 127.0.0.1:7001 http2;" in text and "grpc_pass grpc://triton_grpc;" in text
    for r in replicas:
        assert f"server 127.0.0.1:{r.grpc_port} " in text and f"server 127.0.0.1:{r.http_port} " in text
        assert str(r.metrics_port) not in text  # Prometheus scrapes each replica, not the proxy
