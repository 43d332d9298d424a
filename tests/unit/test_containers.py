"""docker-compose.yml and the Dockerfile: valid for docker compose, pinned, hardened (docs/security.md)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from packaging.utils import canonicalize_name

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


def test_triton_loads_explicitly_and_changes_only_through_the_repository_api(
    rendered: dict[str, dict[str, Any]],
) -> None:
    for profile, name in (("gpu", "triton"), ("cpu", "triton-cpu")):
        cmd = rendered[profile][name]["command"]
        assert "--model-control-mode=explicit" in cmd and "--load-model=*" in cmd
        assert not [a for a in cmd if "poll" in a], "no polling in production (NVIDIA's deployment guide)"


def _data_file(svc: dict[str, Any]) -> Path:
    """The host file behind the service's --ner-data, through its volumes."""
    cmd = svc["command"]
    target = cmd[cmd.index("--ner-data") + 1]
    for source, mount, _ in volumes(svc):
        if target == mount or target.startswith(mount.rstrip("/") + "/"):
            return Path(source) / Path(target).relative_to(mount)
    raise AssertionError(f"--ner-data {target} is not on a volume")


def test_locust_texts_ship_with_the_stack(rendered: dict[str, dict[str, Any]]) -> None:
    from ner_triton.loadtest.texts import TextPool

    for services in rendered.values():
        for name in ("locust-master", "locust-worker"):
            path = _data_file(services[name])
            assert path.is_relative_to(ROOT) and path.is_file(), f"{name} sends {path}, which is not in the checkout"
            assert len(TextPool.from_source(str(path)).sentences) >= 50
    # The same file is in the tools image: the Dockerfile copies loadtest/ and .dockerignore lets it in.
    assert "COPY loadtest /app/loadtest" in DOCKERFILE.read_text()
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!loadtest/" in ignore and not [x for x in ignore if x.startswith("loadtest/data")]


def test_locust_results_reach_the_host(rendered: dict[str, dict[str, Any]]) -> None:
    for services in rendered.values():
        master = services["locust-master"]
        writable = {target: source for source, target, ro in volumes(master) if not ro}
        assert Path(writable["/results"]) == ROOT / "loadtest" / "results"
        cmd = master["command"]
        for flag in ("--csv", "--html", "--report-prefix"):
            assert cmd[cmd.index(flag) + 1].startswith("/results/"), flag
        assert master["read_only"] is True, "still a read-only root: only /results and /tmp are writable"


def test_locust_env_passes_optional_settings_only_when_set() -> None:
    result = compose_config("cpu", {**os.environ, **ENV, "LOCUST_HEADLESS": "true", "LOCUST_RUN_TIME": "5m"})
    env = yaml.safe_load(result.stdout)["services"]["locust-master"]["environment"]
    assert env["LOCUST_HEADLESS"] == "true" and env["LOCUST_RUN_TIME"] == "5m"
    unset = {k: v for k, v in os.environ.items() if not k.startswith("LOCUST_")}
    env = yaml.safe_load(compose_config("cpu", {**unset, **ENV}).stdout)["services"]["locust-master"]["environment"]
    assert env.get("LOCUST_RUN_TIME") in (None, ""), "an empty run time is an error for Locust: not set at all"
    assert env.get("LOCUST_RUN_TIME") is None


def test_images_take_a_registry_and_tag() -> None:
    result = compose_config("gpu", {**os.environ, **ENV, "NER_IMAGE_PREFIX": "registry.example.com/ner/",
                                    "NER_TAG": "1.2.3"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    built = {name: svc["image"] for name, svc in services.items() if "build" in svc}
    assert {"engine", "triton", "locust-master"} <= set(built)
    for name, image in built.items():
        assert re.fullmatch(r"registry\.example\.com/ner/ner-triton-[a-z]+:1\.2\.3", image), (name, image)


def test_rollout_runs_on_demand_with_the_admin_key() -> None:
    result = compose_config("ops")
    assert result.returncode == 0, result.stderr
    rollout = yaml.safe_load(result.stdout)["services"]["rollout"]
    assert rollout["profiles"] == ["ops"], "never started by `up` of the gpu/cpu profiles"
    assert rollout["command"][:3] == ["ner-rollout", "--url", "triton:8001"]
    assert rollout["environment"]["TRITON_ADMIN_KEY"] == ENV["TRITON_ADMIN_KEY"]
    assert rollout["read_only"] is True and rollout["cap_drop"] == ["ALL"]


# ------------------------------------------------------------------------------------------- constraints

CONSTRAINTS = ROOT / "deploy" / "constraints.txt"


def _dockerfile_pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` in the Dockerfile (continuation lines joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [shlex.split(m.group(1)) for m in re.finditer(r"(?:RUN|&&)\s+pip install ([^\n]*?)\s*(?=&&|$)", text, re.M)]


def _constraints() -> dict[str, list[tuple[str, str]]]:
    """name -> [(version, marker)] of deploy/constraints.txt."""
    from packaging.requirements import Requirement

    pins: dict[str, list[tuple[str, str]]] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{line}: constraints pin exact versions"
        pins.setdefault(canonicalize_name(req.name), []).append((spec.version, str(req.marker or "")))
    return pins


def test_every_image_install_goes_through_the_constraints() -> None:
    installs = _dockerfile_pip_installs()
    assert len(installs) == 6
    for args in installs:
        if "--no-deps" in args:
            assert args[-1] == "/src", f"only the project itself goes in without constraints: {args}"
            continue
        assert args[args.index("-c") + 1] == "/src/constraints.txt", args
    copied = re.findall(r"^COPY (.*) /src/$", DOCKERFILE.read_text(), flags=re.M)
    assert copied and all("deploy/constraints.txt" in c for c in copied)
    assert "!deploy/constraints.txt" in (ROOT / ".dockerignore").read_text().splitlines()


def test_constraints_pin_every_image_requirement_within_the_project_bounds() -> None:
    from packaging.requirements import Requirement

    pins = _constraints()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {
        canonicalize_name(Requirement(r).name): Requirement(r).specifier
        for r in [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    }
    for args in _dockerfile_pip_installs():
        for arg in args:
            if arg.startswith("-") or arg.startswith("/"):
                continue
            req = Requirement(arg)
            name = canonicalize_name(req.name)
            assert name in pins, f"{req.name} is installed in an image but not pinned in {CONSTRAINTS.name}"
            for version, marker in pins[name]:
                assert version in req.specifier, f"{name}=={version} ({marker}) breaks the Dockerfile's {req}"
            for version, marker in pins[name] if name in declared else []:
                assert version in declared[name], f"{name}=={version} ({marker}) breaks pyproject's {declared[name]}"
    # Both base-image Pythons get a version of every pinned package that has a marker.
    for name, entries in pins.items():
        markers = [m for _, m in entries]
        assert len(markers) == len(set(markers)), f"{name} is pinned twice for the same Python"
