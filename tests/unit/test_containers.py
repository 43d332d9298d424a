"""docker-compose.yml and the Dockerfile: valid for docker compose, pinned, hardened (docs/security.md)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from packaging.utils import canonicalize_name

from ner_triton.serving.server import RATE_LIMIT

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
        # Triton 2.51's names (`tritonserver --help`); logging and trace too (issue 20).
        assert f"--grpc-restricted-protocol=model-repository,shared-memory,logging,trace:ner-admin-key={key}" in cmd
        assert f"--http-restricted-api=model-repository,shared-memory,logging,trace:ner-admin-key={key}" in cmd
        assert "--model-repository=/models" in cmd and "--metrics-config=summary_latencies=true" in cmd
        assert RATE_LIMIT in cmd, "the first-choice instance of ner needs the rate limiter"
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
    command = cpu["repository-cpu"]["command"]
    assert command[command.index("--layout") + 1] == "python", "the CPU profile serves what the tests run"
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


SERVER_REQUIREMENTS = ROOT / "deploy" / "docker" / "server-requirements.txt"


def _requirements_file(path: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def _dockerfile_pip_installs() -> list[list[str]]:
    """The arguments of every `pip install` in the Dockerfile (continuation lines joined; `-r /src/FILE` expanded
    to FILE's requirements, from deploy/docker/)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for m in re.finditer(r"(?:RUN|&&)\s+pip install ([^\n]*?)\s*(?=&&|$)", text, re.M):
        args = shlex.split(m.group(1))
        while "-r" in args:
            i = args.index("-r")
            args[i : i + 2] = _requirements_file(ROOT / "deploy" / "docker" / Path(args[i + 1]).name)
        out.append(args)
    return out


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
    assert any("deploy/docker/server-requirements.txt" in c for c in copied)
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert {"!deploy/constraints.txt", "!deploy/docker/server-requirements.txt"} <= set(ignore)


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


# ---------------------------------------------------------------------- the CPU profile serves the one-step ner

VENV_BIN = Path(sys.executable).parent


def _entrypoint(stage: str) -> list[str]:
    """The ENTRYPOINT of one Dockerfile stage (exec form)."""
    text = DOCKERFILE.read_text()
    body = text[text.index(f"AS {stage}\n") :]
    body = body[: body.index("\nFROM ")] if "\nFROM " in body else body
    (line,) = [ln for ln in body.splitlines() if ln.startswith("ENTRYPOINT ")]
    return list(json.loads(line.removeprefix("ENTRYPOINT ")))


def _write_repository(repository: Path, env: dict[str, str]) -> None:
    """What the compose one-shot `repository-cpu` runs, without a build's weights (configs and model.py)."""
    full = {k: v for k, v in os.environ.items() if k != "NER_INSTANCES"} | env
    subprocess.run(
        [str(VENV_BIN / "ner-repository"), "--layout", "python", "--repository", str(repository)],
        check=True, capture_output=True, text=True, env=full, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("instances", [None, "3"])
def test_cpu_profile_serves_the_one_step_ner_per_cpu(instances: str | None, tmp_path: Path) -> None:
    """Issue 21: the compose cpu profile's repository holds the one-step python `ner` with the instance setting
    (NER_INSTANCES; default auto: the CPUs the container may use), and the server starts on it unchanged."""
    from ner_triton.cpus import available_cpus
    from ner_triton.repository.model_configs import instances_of, parse_pbtxt
    from ner_triton.runtime.limits import Limits
    from ner_triton.serving.entrypoint import rewrite_command

    result = compose_config("cpu", {**ENV, **({"NER_INSTANCES": instances} if instances else {})})
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    writer, server = services["repository-cpu"], services["triton-cpu"]
    want = int(instances) if instances else available_cpus()
    assert writer["environment"]["NER_INSTANCES"] == server["environment"]["NER_INSTANCES"] == (instances or "auto")

    repository = tmp_path / "models"
    _write_repository(repository, {"NER_INSTANCES": writer["environment"]["NER_INSTANCES"]})
    ner = parse_pbtxt((repository / "ner" / "config.pbtxt").read_text())
    assert ner.backend == "python" and not ner.HasField("ensemble_scheduling"), "`ner` is the one-step python model"
    assert instances_of(ner) == want + Limits().bulk_slots  # one per CPU, one per bulk slot
    assert "ner_triton.runtime.adapters" in (repository / "ner" / "1" / "model.py").read_text()

    # The server image's entrypoint, then the compose command, on that repository: the counts agree, so Triton
    # reads the repository itself (a rollout of a new `ner` version reaches it without a restart).
    assert _entrypoint("server") == ["python3", "-m", "ner_triton.serving.entrypoint"]
    command = [a.replace("=/models", f"={repository}") for a in server["command"]]
    assert rewrite_command(command, server["environment"]) == command
    # A server with another count (NER_INSTANCES set on the server only) starts on a view with its own count.
    view = tmp_path / "view"
    out = rewrite_command(command, {"NER_INSTANCES": str(want + 1), "NER_REPOSITORY_VIEW": str(view)})
    assert f"--model-repository={view}" in out
    assert instances_of(parse_pbtxt((view / "ner" / "config.pbtxt").read_text())) == want + 1 + Limits().bulk_slots


def test_tls_override_adds_only_tls_to_the_servers(tmp_path: Path) -> None:
    """deploy/compose/tls.yml: Triton serves gRPC over TLS (its own --grpc-use-ssl), Locust and the rollout
    verify the certificate; the rest of the Triton command is the base's."""
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose not found: apt-get install docker-compose (.ci/run does)")
    override = ROOT / "deploy" / "compose" / "tls.yml"
    env = {**os.environ, **ENV, "NER_TLS_DIR": str(tmp_path)}
    docs = {}
    for profile in ("cpu", "gpu", "ops"):
        files = [exe, "-f", str(COMPOSE), "-f", str(override), "--profile", profile, "config"]
        tls = subprocess.run(files, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
        assert tls.returncode == 0, tls.stderr
        docs[profile] = yaml.safe_load(tls.stdout)["services"]
    plain = {p: yaml.safe_load(compose_config(p).stdout)["services"] for p in ("cpu", "gpu")}
    flags = ["--grpc-use-ssl=true", "--grpc-server-cert=/tls/tls.crt", "--grpc-server-key=/tls/tls.key"]
    for profile, name in (("cpu", "triton-cpu"), ("gpu", "triton")):
        svc = docs[profile][name]
        assert svc["command"] == plain[profile][name]["command"] + flags
        assert (str(tmp_path), "/tls", True) in volumes(svc)
        for locust in ("locust-master", "locust-worker"):
            environment = docs[profile][locust]["environment"]
            assert environment["NER_GRPC_SSL"] == "true" and environment["NER_TLS_SERVER_NAME"] == "triton"
            assert environment["NER_TLS_ROOT_CERTIFICATES"] == "/tls/ca.crt"
    rollout = docs["ops"]["rollout"]["command"]
    assert rollout[rollout.index("--root-certificates") + 1] == "/tls/ca.crt" and "--tls-server-name" in rollout
    files = [exe, "-f", str(COMPOSE), "-f", str(override), "--profile", "cpu", "config"]
    missing = subprocess.run(files, capture_output=True, text=True, env={**os.environ, **ENV}, cwd=ROOT, timeout=60)
    assert missing.returncode != 0 and "set NER_TLS_DIR" in missing.stderr


# ------------------------------------------------------------- the server image satisfies the runtime's imports

# Provided by Triton's python backend itself, not by pip.
BACKEND_MODULES = {"triton_python_backend_utils"}


def _module_path(module: str) -> Path | None:
    base = ROOT / "src" / Path(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imports(path: Path, everywhere: bool) -> set[str]:
    """Modules ``path`` imports: at any depth (``everywhere``) or when it is imported (module level, incl. try/if)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if everywhere else _module_level(tree.body)
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module != "__future__":
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return out


def _module_level(body: list[Any]) -> list[Any]:
    import ast

    out: list[Any] = []
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        out.append(node)
        for field in ("body", "orelse", "finalbody", "handlers"):
            out += _module_level(getattr(node, field, []) or [])
    return out


def _third_party_imports_of_the_server() -> dict[str, set[str]]:
    """import name -> the ner_triton modules that import it: every import of ner_triton.runtime (at any depth),
    of the entrypoint, and of what they import from the package when it is imported."""
    roots = [m for m in (ROOT / "src").rglob("*.py") if "ner_triton/runtime" in m.as_posix()]
    todo = [(p, True) for p in roots] + [(ROOT / "src/ner_triton/serving/entrypoint.py", True)]
    seen: set[Path] = set()
    found: dict[str, set[str]] = {}
    while todo:
        path, everywhere = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path, everywhere):
            top = name.split(".")[0]
            if top == "ner_triton":
                target = _module_path(name)
                if target is not None:
                    todo.append((target, target in roots))
                    for parent in Path(*name.split(".")).parents:  # importing a.b.c runs a/__init__ and a/b/__init__
                        if str(parent) != ".":
                            init = _module_path(".".join(parent.parts))
                            if init is not None:
                                todo.append((init, False))
            elif top not in sys.stdlib_module_names and top not in BACKEND_MODULES:
                found.setdefault(name if top == "google" else top, set()).add(path.stem)
    return found


def test_server_image_install_list_satisfies_every_runtime_import() -> None:
    """Issue 21: every third-party import of ner_triton.runtime (what the python backend's stub runs for the
    one-step `ner`) and of the entrypoint is installed by the server image - named in server-requirements.txt and
    pinned for the NGC image's Python 3.10 in constraints.txt - and numpy stays 1.x there."""
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement

    dists = packages_distributions()
    listed = {canonicalize_name(Requirement(r).name): Requirement(r) for r in _requirements_file(SERVER_REQUIREMENTS)}
    pins = _constraints()
    imports = _third_party_imports_of_the_server()
    assert {"numpy", "tokenizers", "onnxruntime"} <= set(imports), imports
    for name, users in sorted(imports.items()):
        top = name.split(".")[0]
        candidates = {canonicalize_name(d) for d in dists.get(top, [])}
        if top == "google":  # a namespace package: protobuf provides google.protobuf
            candidates = {"protobuf"} if name.startswith("google.protobuf") else candidates
        assert candidates & set(listed), f"{name} (imported by {sorted(users)}) is not in {SERVER_REQUIREMENTS.name}"
    for name, req in listed.items():
        for_310 = [v for v, marker in pins.get(name, []) if not marker or '"3.10"' in marker]
        assert for_310, f"{name} is not pinned for Python 3.10 (the NGC image) in {CONSTRAINTS.name}"
        assert for_310[0] in req.specifier
    numpy = next(v for v, marker in pins["numpy"] if not marker or '"3.10"' in marker)
    assert numpy.startswith("1."), "the python backend stub of Triton 24.10 is built against numpy 1.x"


def test_constraints_pin_the_3_10_only_dependencies() -> None:
    """Finding 9 of issue 21: pip resolving on 3.11 leaves out dependencies whose markers select 3.10 only; the
    generator adds them (update_constraints.missing_for) and the pins are there."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("update_constraints", ROOT / "deploy/docker/update_constraints.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    items = [
        {"metadata": {"name": "pytest", "version": "9", "requires_dist": [
            'tomli>=1; python_version < "3.11"', 'exceptiongroup>=1; python_version < "3.11"', "pluggy>=1"]}},
        {"metadata": {"name": "pluggy", "version": "1"}},
        {"metadata": {"name": "tritonclient", "version": "2", "requires_dist": ['grpcio>=1.41; extra == "grpc"']}},
    ]  # fmt: skip
    assert module.missing_for(items, ["pytest", "tritonclient"], "3.11") == []
    assert module.missing_for(items, ["pytest", "tritonclient"], "3.10") == ["tomli>=1", "exceptiongroup>=1"]
    assert module.missing_for(items, ["tritonclient[grpc]"], "3.11") == ["grpcio>=1.41"]
    pins = _constraints()
    for name in ("tomli", "exceptiongroup"):
        assert any('"3.10"' in marker for _, marker in pins[name]), f"{name} unpinned for 3.10"
