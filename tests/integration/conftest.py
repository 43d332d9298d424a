"""A real tritonserver (from the nvidia-pytriton wheel) on free loopback ports, serving the tiny build."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ner_triton.serving.server import ServerSettings, TritonServer, free_ports
from support import TinyBuild


@pytest.fixture(scope="session")
def server(tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerSettings]:
    state = tmp_path_factory.mktemp("triton")
    grpc, http, metrics = free_ports(3)
    settings = replace(
        ServerSettings(),
        repository=tiny_build.repository,
        grpc_port=grpc,
        http_port=http,
        metrics_port=metrics,
        log_file=state / "tritonserver.log",
        pid_file=state / "tritonserver.pid",
    )
    with TritonServer(settings):
        yield settings


@pytest.fixture(scope="session")
def repository(tiny_build: TinyBuild) -> Path:
    return tiny_build.repository
