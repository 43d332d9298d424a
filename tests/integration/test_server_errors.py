"""`ner-serve` fails with a message that names the fix: port taken, empty repository, broken model."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from ner_triton.errors import ServerError
from ner_triton.repository.model_configs import RepositorySettings
from ner_triton.repository.render import write_configs
from ner_triton.serving.server import ServerSettings, TritonServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _settings(tmp_path: Path, repository: Path) -> ServerSettings:
    return ServerSettings.on_free_ports(repository, tmp_path, startup_timeout_s=90)


def test_empty_repository_says_run_make_build(tmp_path: Path) -> None:
    (tmp_path / "repo").mkdir()
    with pytest.raises(ServerError, match="holds no model: run `make build`"):
        TritonServer(_settings(tmp_path, tmp_path / "repo")).start()


def test_configs_without_weights_say_run_make_build(tmp_path: Path) -> None:
    repo = write_configs(RepositorySettings(), tmp_path / "repo")  # what a fresh clone holds
    with pytest.raises(ServerError, match=r"no weights .*model.onnx missing.*make build"):
        TritonServer(_settings(tmp_path, repo)).start()


def test_port_taken_names_the_port_and_the_variables(tmp_path: Path, repository: Path) -> None:
    settings = _settings(tmp_path, repository)
    with socket.socket() as s:
        s.bind((settings.host, settings.grpc_port))
        s.listen()
        with pytest.raises(ServerError, match=rf"port\(s\) \[{settings.grpc_port}\].*TRITON_GRPC_PORT"):
            TritonServer(settings).start()


def test_model_that_fails_to_load_shows_tritons_reason(tmp_path: Path, repository: Path) -> None:
    broken = tmp_path / "repo"
    shutil.copytree(repository, broken)
    (broken / "ner_bert_fp32" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(ServerError, match=r"ner_bert_fp32") as info:
        TritonServer(_settings(tmp_path, broken)).start()
    assert "At:" not in str(info.value), "the python traceback is cut from the message"


def test_cli_prints_one_line_error_not_a_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ner-serve"), "start", "--repository", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "does not exist: run `make build` first" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.reliability
def test_admin_key_restricts_model_control_but_not_inference(tmp_path: Path, repository: Path) -> None:
    import tritonclient.grpc as grpcclient

    from ner_triton.client import NerClient
    from ner_triton.serving.server import GRPC_ADMIN_HEADER

    settings = replace(_settings(tmp_path, repository), admin_key="not-a-real-secret")
    with TritonServer(settings):
        client = grpcclient.InferenceServerClient(settings.grpc_url)
        with pytest.raises(grpcclient.InferenceServerException, match=r"(?i)restricted|permission|header"):
            client.get_model_repository_index()
        assert client.get_model_repository_index(headers={GRPC_ADMIN_HEADER: "not-a-real-secret"})
        with NerClient(settings.grpc_url) as ner:
            assert len(ner.extract(["Maria Lindqvist visited Madrid."])) == 1
