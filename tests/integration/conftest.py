"""A real tritonserver (from the nvidia-pytriton wheel) on free loopback ports, serving the tiny build."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ner_triton.serving.server import ServerSettings, TritonServer
from support import TinyBuild


@pytest.fixture(scope="session")
def server(tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerSettings]:
    state = tmp_path_factory.mktemp("triton")
    settings = ServerSettings.on_free_ports(tiny_build.repository, state)
    with TritonServer(settings):
        yield settings


@pytest.fixture(scope="session")
def repository(tiny_build: TinyBuild) -> Path:
    return tiny_build.repository
