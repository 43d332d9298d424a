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
from ner_triton.repository.install import served_settings
from ner_triton.repository.rollout import export_repository
from ner_triton.serving.server import ServerSettings, TritonServer, free_ports
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


def _other_build(artifacts: Path, dest: Path) -> Path:
    """A copy of the build whose served models tag every token ``O`` (the classifier's bias for ``O`` raised):
    a build that answers visibly differently from ``artifacts``, with the same tokenizer and labels."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    shutil.copytree(artifacts, dest)
    labels = json.loads((dest / "model" / "labels.json").read_text())
    tags = labels if isinstance(labels, list) else labels.get("labels", labels)
    outside = list(tags).index("O")
    served = served_settings(dest).served.onnx_file
    for path in [dest / "onnx" / served]:  # the file the one-step ``ner`` serves
        model = onnx.load(str(path))
        changed = 0
        for init in model.graph.initializer:
            array = numpy_helper.to_array(init)
            if "bias" in init.name and array.dtype == np.float32 and array.shape == (len(tags),):
                array = array.copy()
                array[outside] += 1000.0
                init.CopyFrom(numpy_helper.from_array(array, init.name))
                changed += 1
        assert changed, f"{path.name}: no classifier bias found"
        onnx.save(model, str(path))
    return dest


def _entities(url: str) -> int:
    with NerClient(url, timeout_s=30) as client:
        return sum(len(e) for e in client.extract(["Maria Lindqvist visited Madrid.", "ACME rejects Danish plan."]))


def test_a_rollback_to_an_older_build_is_served(tiny_build: TinyBuild, tmp_path: Path) -> None:
    """Build A serves (version 1), build B rolls out (version 2), then A again: the rollback is version 3, loaded
    by ``ner-rollout`` and answering as A did (before, every layout but python rewrote version 1 in place with A's
    old mtime, and Triton ignored the rollback)."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_build.repository, repo)
    other = _other_build(tiny_build.artifacts, tmp_path / "b")
    settings = ServerSettings.on_free_ports(repo, tmp_path / "s", model_control_mode="explicit", admin_key=ADMIN_KEY)
    with TritonServer(settings):
        url = settings.grpc_url
        found_a = _entities(url)
        assert found_a > 0, "the tiny build finds entities"
        export_repository(other, repo)
        rollout([url], ADMIN_KEY)
        assert _versions(url)["ner"] == ("2",) and _entities(url) == 0, "build B (all O) serves"
        export_repository(tiny_build.artifacts, repo)  # the rollback
        (state,) = rollout([url], ADMIN_KEY)
        assert state.versions["ner"] == ("3",) and _versions(url)["ner"] == ("3",)
        assert _entities(url) == found_a, "the rolled-back build answers as it did"


def test_a_server_started_later_loads_the_declared_version_not_the_newest(
    tiny_build: TinyBuild, tmp_path: Path
) -> None:
    """Version 2 declared, version 3 half-written (not declared, a truncated model): a server started now, and a
    repository-API load on it, serve exactly version 2."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_build.repository, repo)
    export_repository(tiny_build.artifacts, repo)  # version 2, declared
    for step in ("ner", *BERT_STEPS):
        half = repo / step / "3"
        shutil.copytree(repo / step / "2", half)
        model = half / "model.onnx"
        model.write_bytes(model.read_bytes()[:1000])  # an upload cut short
    settings = ServerSettings.on_free_ports(repo, tmp_path / "s", model_control_mode="explicit", admin_key=ADMIN_KEY)
    with TritonServer(settings):
        versions = _versions(settings.grpc_url)
        assert all(versions[step] == ("2",) for step in ("ner", *BERT_STEPS)), versions
        (state,) = rollout([settings.grpc_url], ADMIN_KEY)
        assert all(state.versions[step] == ("2",) for step in ("ner", *BERT_STEPS)), state.versions
        assert _entities(settings.grpc_url) > 0


def test_ner_serve_with_explicit_control_then_ner_rollout(tiny_build: TinyBuild, tmp_path: Path) -> None:
    """``make serve`` with ``TRITON_MODEL_CONTROL=explicit`` (the ner-serve command, as make runs it) loads the
    repository at start and nothing more until ``ner-rollout`` loads the declared version."""
    repo = tmp_path / "repo"
    shutil.copytree(tiny_build.repository, repo)
    grpc, http, metrics = free_ports(3)
    bindir = Path(sys.executable).parent
    env = {
        **os.environ,
        "MODEL_REPOSITORY": str(repo),
        "TRITON_MODEL_CONTROL": "explicit",
        "TRITON_ADMIN_KEY": ADMIN_KEY,
        "TRITON_GRPC_PORT": str(grpc),
        "TRITON_HTTP_PORT": str(http),
        "TRITON_METRICS_PORT": str(metrics),
    }
    url = f"127.0.0.1:{grpc}"
    started = subprocess.run([str(bindir / "ner-serve"), "start"], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=180)  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        assert _versions(url)["ner"] == ("1",)
        export_repository(tiny_build.artifacts, repo)  # version 2 declared; an explicit server does not look
        time.sleep(3)
        assert _versions(url)["ner"] == ("1",)
        done = subprocess.run([str(bindir / "ner-rollout"), "--url", url], env=env, capture_output=True, text=True,
                              timeout=180)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["replicas"][0]["versions"]["ner"] == ["2"]
        assert _versions(url)["ner"] == ("2",) and _entities(url) > 0
    finally:
        stopped = subprocess.run([str(bindir / "ner-serve"), "stop"], cwd=tmp_path, env=env, capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
    assert "tritonserver stopped" in stopped.stdout, stopped.stdout + stopped.stderr
