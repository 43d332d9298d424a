"""The admin surface of the local server (``ner-serve`` with ``TRITON_ADMIN_KEY``), on a real tritonserver: the
logging and trace APIs, like the model-repository API, need the admin header; inference and health stay open."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from ner_triton.client import NerClient
from ner_triton.serving.server import ADMIN_HEADER, GRPC_ADMIN_HEADER, RESTRICTED, ServerSettings, TritonServer
from support import TinyBuild

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

KEY = "admin-surface-test-key-not-a-secret"


@pytest.fixture(scope="module")
def keyed(tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerSettings]:
    settings = ServerSettings.on_free_ports(tiny_build.repository, tmp_path_factory.mktemp("admin"), admin_key=KEY)
    with TritonServer(settings):
        yield settings


def _post(url: str, body: dict[str, object], key: str | None = None) -> int:
    headers = {"Content-Type": "application/json", **({ADMIN_HEADER: key} if key else {})}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_restricted_names_are_the_ones_triton_accepts() -> None:
    assert RESTRICTED.split(",") == ["model-repository", "shared-memory", "logging", "trace"]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/v2/logging", {"log_verbose_level": 1}), ("/v2/trace/setting", {"trace_rate": "1000"})],
    ids=["logging", "trace"],
)
def test_http_logging_and_trace_need_the_key(keyed: ServerSettings, path: str, body: dict[str, object]) -> None:
    url = keyed.http_url + path
    refused = _post(url, body)
    assert refused in (401, 403), f"POST {path} without the key answered {refused}"
    assert _post(url, body, KEY) == 200
    if path == "/v2/logging":
        assert _post(url, {"log_verbose_level": 0}, KEY) == 200


def test_grpc_logging_and_trace_need_the_key(keyed: ServerSettings) -> None:
    client = grpcclient.InferenceServerClient(keyed.grpc_url)
    try:
        with pytest.raises(grpcclient.InferenceServerException):
            client.update_log_settings({"log_verbose_level": 1})
        with pytest.raises(grpcclient.InferenceServerException):
            client.get_log_settings()
        with pytest.raises(grpcclient.InferenceServerException):
            client.update_trace_settings(settings={"trace_rate": "1000"})
        with pytest.raises(grpcclient.InferenceServerException):
            client.get_trace_settings()
        headers = {GRPC_ADMIN_HEADER: KEY}
        client.update_log_settings({"log_verbose_level": 0}, headers=headers)
        assert client.get_log_settings(headers=headers, as_json=True)["settings"]
        client.update_trace_settings(settings={"trace_rate": "1000"}, headers=headers)
        assert client.get_trace_settings(headers=headers, as_json=True)["settings"]
    finally:
        client.close()


def test_inference_and_health_stay_open(keyed: ServerSettings, tmp_path: Path) -> None:
    with NerClient(keyed.grpc_url) as client:
        assert client.extract(["Maria Lindqvist visited Madrid."])
    with urllib.request.urlopen(keyed.http_url + "/v2/health/ready", timeout=5) as resp:
        assert resp.status == 200
