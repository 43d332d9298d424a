"""docker-compose.yml and the Dockerfile: valid for docker compose, pinned, hardened (docs/security.md)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
ENV = {"TRITON_ADMIN_KEY": "test-key-not-a-secret", "GRAFANA_ADMIN_PASSWORD": "test-password-not-a-secret"}
TRITONS = ("triton", "triton-cpu")


def compose_config(profile: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not found: apt-get install docker-compose (.ci/run does)")
    full = {**os.environ, **(ENV if env is None else env)}
    return subprocess.run(
        [exe, "-f", str(COMPOSE), "--profile", profile, "config"],
        capture_output=True,
        text=True,
        env=full,
        cwd=ROOT,
        timeout=60,
    )


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    """The compose file as docker compose resolves it (anchors merged, variables substituted): the
    services of each profile."""
    out = {}
    for profile in ("gpu", "cpu"):
        result = compose_config(profile)
        assert result.returncode == 0, result.stderr
        services = yaml.safe_load(result.stdout)["services"]
        out[profile] = {k: v for k, v in services.items() if profile in v.get("profiles", [profile])}
    return out


def volumes(svc: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each volume, from the long or the short syntax."""
    out = []
    for v in svc.get("volumes", []):
        if isinstance(v, dict):
            out.append((v["source"], v["target"], bool(v.get("read_only"))))
        else:
            parts = v.split(":")
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def ports(svc: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(host ip, published, target) of each port, from the long or the short syntax."""
    out = []
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            out.append((p.get("host_ip", ""), int(p["published"]), int(p["target"])))
        else:
            ip, published, target = p.split("/")[0].rsplit(":", 2) if p.count(":") == 2 else ("", *p.split(":"))
            out.append((ip, int(published), int(target)))
    return out


def test_compose_requires_the_admin_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_ADMIN_KEY"}
    result = compose_config("gpu", {**env, "GRAFANA_ADMIN_PASSWORD": "x"})
    assert result.returncode != 0 and "set TRITON_ADMIN_KEY" in result.stderr


def test_every_image_is_pinned(rendered: dict[str, dict[str, Any]]) -> None:
    for services in rendered.values():
        for name, svc in services.items():  # every service, whatever its profile
            image = svc["image"]
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), (name, image)
    froms = re.findall(r"^FROM (\S+)", DOCKERFILE.read_text(), flags=re.M)
    tag = re.search(r"^ARG TRITON_TAG=(\d\d\.\d\d)$", DOCKERFILE.read_text(), flags=re.M)
    assert tag, "the Dockerfile pins one NGC release for server and engine"
    assert froms == [
        "nvcr.io/nvidia/tritonserver:${TRITON_TAG}-py3",
        "nvcr.io/nvidia/tensorrt:${TRITON_TAG}-py3",
        "python:3.11.10-slim-bookworm",
    ]


def test_triton_services_are_hardened_and_restricted(rendered: dict[str, dict[str, Any]]) -> None:
    for profile, name in (("gpu", "triton"), ("cpu", "triton-cpu")):
        svc = rendered[profile][name]
        assert svc["user"] == "1000:1000" and svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in svc["security_opt"]
        assert [ro for _, target, ro in volumes(svc) if target == "/models"] == [True], "model repository read-only"
        cmd = svc["command"]
        key = ENV["TRITON_ADMIN_KEY"]
        assert f"--grpc-restricted-protocol=model-repository,shared-memory:ner-admin-key={key}" in cmd
        assert f"--http-restricted-api=model-repository,shared-memory:ner-admin-key={key}" in cmd
        assert "--model-repository=/models" in cmd and "--metrics-config=summary_latencies=true" in cmd
        assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])
        assert svc["shm_size"], "the python backend needs shared memory"
        assert sorted(ports(svc)) == [("127.0.0.1", p, p) for p in (8000, 8001, 8002)]


def test_profiles_split_gpu_and_cpu(rendered: dict[str, dict[str, Any]]) -> None:
    gpu, cpu = rendered["gpu"], rendered["cpu"]
    assert {"engine", "triton"} <= set(gpu) and not {"triton-cpu", "repository-cpu"} & set(gpu)
    assert {"repository-cpu", "triton-cpu"} <= set(cpu) and not {"engine", "triton"} & set(cpu)
    for name in ("engine", "triton"):
        (device,) = gpu[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "deploy" not in cpu["triton-cpu"]
    assert gpu["triton"]["depends_on"]["engine"]["condition"] == "service_completed_successfully"
    assert "--backend" in cpu["repository-cpu"]["command"] and "onnxruntime" in cpu["repository-cpu"]["command"]
    assert "triton" in cpu["triton-cpu"]["networks"]["default"]["aliases"]
    for services in (gpu, cpu):
        assert {"locust-master", "locust-worker", "prometheus", "grafana"} <= set(services)
        assert "triton:8001" in services["locust-master"]["command"]


def test_monitoring_files_the_compose_file_mounts_exist(rendered: dict[str, dict[str, Any]]) -> None:
    for svc in rendered["gpu"].values():
        for source, _, _ in volumes(svc):
            if source.startswith(str(ROOT / "deploy")):
                assert Path(source).exists(), source
    assert (ROOT / "deploy" / "monitoring" / "prometheus.yml").is_file()
