"""Explicit model control on real servers: a new version in the repository changes nothing until ``ner-rollout``
loads it through the repository API (admin key), and then every replica switches under load with zero failed
requests and ends on the same versions. The same property as the poll-mode test of test_reliability.py, without
polling."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from ner_triton.client import NerClient
from ner_triton.deploy.rollout import GRPC_ADMIN_HEADER, resolve, rollout, served_versions
from ner_triton.errors import ClientError, ServerError
from ner_triton.repository.rollout import export_repository
from ner_triton.serving.server import ServerSettings, TritonServer
from support import TinyBuild

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.slow]

BERT_STEPS = ("ner_bert_int8", "ner_bert_fp32")
ADMIN_KEY = "rollout-test-key-not-a-secret"
EXPLICIT = {"model_control_mode": "explicit", "extra_args": ("--load-model=*",), "admin_key": ADMIN_KEY}


def _versions(url: str) -> dict[str, tuple[str, ...]]:
    client = grpcclient.InferenceServerClient(url)
    try:
        index = client.get_model_repository_index(headers={GRPC_ADMIN_HEADER: ADMIN_KEY}, as_json=True)["models"]
    finally:
        client.close()
    return served_versions(index)


def test_rollout_through_the_repository_api_under_load_with_zero_failures(
    tiny_build: TinyBuild, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_build.repository, repo)
    replicas = [ServerSettings.on_free_ports(repo, tmp_path / f"r{i}", **EXPLICIT) for i in range(2)]  # type: ignore[arg-type]
    lock, counts, errors = threading.Lock(), Counter(), []
    stop = threading.Event()

    def load(url: str) -> None:
        with NerClient(url, timeout_s=30) as client:
            while not stop.is_set():
                try:
                    client.extract(["Maria Lindqvist visited Madrid.", "ACME rejects Danish plan."])
                    outcome = "ok"
                except ClientError as exc:
                    outcome = "failed"
                    errors.append(str(exc))
                with lock:
                    counts[outcome] += 1

    with ExitStack() as stack:
        for settings in replicas:
            stack.enter_context(TritonServer(settings))
        urls = [s.grpc_url for s in replicas]
        assert all(_versions(u)["ner_bert_int8"] == ("1",) for u in urls)
        threads = [threading.Thread(target=load, args=(url,)) for url in urls for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(1.5)
            export_repository(tiny_build.artifacts, repo)  # the "new build": version 2 on disk
            time.sleep(3)
            # Explicit control: the servers do not notice a changed repository by themselves.
            assert all(_versions(u)["ner_bert_int8"] == ("1",) for u in urls), "a server loaded v2 without a rollout"
            before = counts["ok"]
            states = rollout(urls, ADMIN_KEY)
            time.sleep(1.5)  # traffic on the new version
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        after = [_versions(u) for u in urls]
        stats = [
            grpcclient.InferenceServerClient(u).get_inference_statistics("ner_bert_int8", "2", as_json=True)
            for u in urls
        ]
    assert [s.url for s in states] == urls
    for state, versions in zip(states, after, strict=True):
        for step in BERT_STEPS:
            assert state.versions[step] == ("2",) and versions[step] == ("2",), (state.url, versions)
    assert all(int(s["model_stats"][0]["inference_count"]) > 0 for s in stats), "version 2 served on every replica"
    print(f"rollout: {counts['ok']} requests ok ({counts['ok'] - before} during and after the rollout), "
          f"{counts['failed']} failed")  # fmt: skip
    assert counts["failed"] == 0, errors[:3]
    assert counts["ok"] > before > 0


def test_rollout_command_needs_the_admin_key_and_reports_versions(tiny_build: TinyBuild, tmp_path: Path) -> None:
    settings = ServerSettings.on_free_ports(tiny_build.repository, tmp_path, **EXPLICIT)  # type: ignore[arg-type]
    exe = str(Path(sys.executable).parent / "ner-rollout")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_ADMIN_KEY"}
    with TritonServer(settings):
        denied = subprocess.run([exe, "--url", settings.grpc_url], capture_output=True, text=True, env=env, timeout=60)
        assert denied.returncode != 0 and "TRITON_ADMIN_KEY" in denied.stderr, denied.stderr
        out = tmp_path / "rollout.json"
        done = subprocess.run(
            [exe, "--url", settings.grpc_url, "--output", str(out)],
            capture_output=True,
            text=True,
            env={**env, "TRITON_ADMIN_KEY": ADMIN_KEY},
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
    (replica,) = json.loads(out.read_text())["replicas"]
    assert replica["url"] == settings.grpc_url and "ner" in replica["loaded"]
    assert replica["versions"]["ner"] == ["1"]


def test_rollout_refuses_replicas_that_disagree(tiny_build: TinyBuild, tmp_path: Path) -> None:
    """Two replicas on different repositories end on different versions: the rollout says so."""
    other = tmp_path / "other"
    shutil.copytree(tiny_build.repository, other)
    export_repository(tiny_build.artifacts, other)  # version 2 here only
    a = ServerSettings.on_free_ports(tiny_build.repository, tmp_path / "a", **EXPLICIT)  # type: ignore[arg-type]
    b = ServerSettings.on_free_ports(other, tmp_path / "b", **EXPLICIT)  # type: ignore[arg-type]
    with TritonServer(a), TritonServer(b), pytest.raises(ServerError, match="different versions"):
        rollout([a.grpc_url, b.grpc_url], ADMIN_KEY, models=["ner"])


def test_dns_names_resolve_to_every_address() -> None:
    assert resolve("localhost:8001")[0].endswith(":8001")
    with pytest.raises(Exception, match="host:port"):
        resolve("no-port")
