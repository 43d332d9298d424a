"""The local launcher's control surface, without a server: model-control modes from the environment, the
restricted APIs on the command line, and ``ner-serve stop`` refusing a stale pid file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ner_triton.errors import ConfigError
from ner_triton.serving.server import ServerSettings, TritonInstall, TritonServer, is_our_server, stop_background

INSTALL = TritonInstall(Path("/opt/triton/bin/tritonserver"), Path("/opt/triton/backends"))


def _command(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for key in ("TRITON_MODEL_CONTROL", "TRITON_ADMIN_KEY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return TritonServer(ServerSettings.from_env()).command(INSTALL)


def test_explicit_control_loads_every_model_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    cmd = _command(monkeypatch, TRITON_MODEL_CONTROL="explicit")
    assert "--model-control-mode=explicit" in cmd and cmd.count("--load-model=*") == 1
    assert not any(a.startswith("--repository-poll-secs") for a in cmd)
    assert "--load-model=*" not in _command(monkeypatch)  # poll: the default


def test_a_bad_control_mode_names_the_setting_and_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"TRITON_MODEL_CONTROL='polling' must be one of poll, none, explicit"):
        _command(monkeypatch, TRITON_MODEL_CONTROL="polling")


def test_the_admin_key_restricts_repository_shared_memory_logging_and_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    cmd = _command(monkeypatch, TRITON_ADMIN_KEY="k")
    restricted = "model-repository,shared-memory,logging,trace:ner-admin-key=k"
    assert f"--grpc-restricted-protocol={restricted}" in cmd and f"--http-restricted-api={restricted}" in cmd


def test_stop_with_a_stale_pid_file_signals_nothing(tmp_path: Path) -> None:
    settings = ServerSettings(pid_file=tmp_path / "tritonserver.pid")
    settings.pid_file.write_text(str(os.getpid()))  # a live process that is not a tritonserver: this test
    assert not is_our_server(os.getpid())
    assert stop_background(settings) is False  # and we are still here
    assert not settings.pid_file.exists(), "the stale pid file is removed"
    settings.pid_file.write_text("not-a-pid")
    assert stop_background(settings) is False
