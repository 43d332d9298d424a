#!/usr/bin/env python3
"""Regenerate deploy/constraints.txt: exact versions of everything the images install, so an image built next
month installs what was tested today.

    .venv/bin/python deploy/docker/update_constraints.py      # needs PyPI; about two minutes

pip's own resolver (``pip install --dry-run --report``) resolves the images' requirements twice, for the
Python of each base image: 3.11 (the tools image, python:3.11-slim) and 3.10 (the NGC tritonserver and
tensorrt images of 24.10, Ubuntu 22.04). Pins that differ get a ``python_version`` marker. seqeval and pycuda
publish source distributions only, so they are resolved for this interpreter and pinned for both.

pip evaluates environment markers for the interpreter that runs it, whatever ``--python-version`` says: a
dependency needed only on 3.10 (``tomli; python_version < "3.11"``, ``exceptiongroup``) is left out of a
resolution run on 3.11, and the 3.10 images then installed it unpinned. So each resolution is checked against
the markers of its target Python (:func:`missing_for`) and repeated with what it missed added, until nothing is.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "deploy" / "constraints.txt"
# What deploy/docker/Dockerfile installs besides the project itself (bounds as in pyproject.toml).
SERVER_REQUIREMENTS = ROOT / "deploy" / "docker" / "server-requirements.txt"
REQUIREMENTS = [
    "numpy>=1.24,<2",
    "transformers>=4.45,<6",
    "tokenizers>=0.20,<1",
    "tqdm>=4.66",
    "onnx>=1.16",
    "onnxruntime>=1.19",
    "protobuf>=4.25",
    "tritonclient[grpc]>=2.50,<3",
    "locust>=2.29,<3",
    "prometheus-client>=0.20,<1",
    "cuda-python>=12.3,<13",  # the engine image's CUDA binding (gpu/cuda.py); pycuda below is the fallback
    # dependencies of the two source-only packages, so that they are pinned per Python too
    "scikit-learn>=1.3",
    "pytools>=2024.1.5",
    "mako",
]
SOURCE_ONLY = ["seqeval>=1.2.2", "pycuda>=2024.1"]
PYTHONS = ("3.10", "3.11")
# The base images are glibc 2.35 (Ubuntu 22.04) and 2.36 (Debian 12): every manylinux tag up to 2_35 fits.
PLATFORMS = ("manylinux_2_35_x86_64", *(f"manylinux_2_{v}_x86_64" for v in range(34, 4, -1)), "manylinux2014_x86_64",
             "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64")  # fmt: skip


def server_requirements() -> list[str]:
    """What the server image installs (deploy/docker/server-requirements.txt), without comments."""
    lines = SERVER_REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def marker_environment(python: str | None) -> dict[str, str]:
    """Marker variables of the images' Linux x86_64 CPython ``python`` (this interpreter's when None)."""
    version = python or platform.python_version_tuple()[0] + "." + platform.python_version_tuple()[1]
    return {
        "python_version": version,
        "python_full_version": f"{version}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
    }


def missing_for(items: list[dict[str, object]], requested: list[str], python: str | None) -> list[str]:
    """Dependencies that ``python``'s markers require but a resolution (pip's report ``install`` items) lacks."""
    names = {canonicalize_name(str(i["metadata"]["name"])) for i in items}  # type: ignore[index]
    extras: dict[str, set[str]] = {}
    for text in requested:
        req = Requirement(text)
        extras.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    env = marker_environment(python)
    missing: list[str] = []
    changed = True
    while changed:  # extras asked for by one dependency may switch on others' dependencies
        changed = False
        for item in items:
            meta = item["metadata"]  # type: ignore[index]
            name = canonicalize_name(str(meta["name"]))  # type: ignore[index]
            for text in meta.get("requires_dist") or []:  # type: ignore[union-attr]
                req = Requirement(text)
                wanted = {""} | extras.get(name, set())
                if req.marker and not any(Marker(str(req.marker)).evaluate({**env, "extra": e}) for e in wanted):
                    continue
                dep = canonicalize_name(req.name)
                if not req.extras <= extras.setdefault(dep, set()):
                    extras[dep] |= req.extras
                    changed = True
                if dep not in names and str(Requirement(f"{req.name}{req.specifier}")) not in missing:
                    missing.append(str(Requirement(f"{req.name}{req.specifier}")))
    return missing


def resolve(requirements: list[str], python: str | None) -> dict[str, str]:
    """Exact versions of ``requirements`` and everything they need on ``python``."""
    wanted = list(requirements)
    for _ in range(5):
        items = _pip_report(wanted, python)
        missing = missing_for(items, wanted, python)
        if not missing:
            return {canonicalize_name(str(i["metadata"]["name"])): str(i["metadata"]["version"]) for i in items}  # type: ignore[index]
        print(f"Python {python or 'here'}: pip left out {', '.join(missing)} (markers of that Python); resolving again")
        wanted += missing
    raise SystemExit(f"Python {python}: the resolution still misses {missing} after 5 rounds; check the markers.")


def _pip_report(requirements: list[str], python: str | None) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--report", str(report)]  # fmt: skip
        if python:
            cmd += ["--python-version", python, "--only-binary=:all:"]
            cmd += [f"--platform={p}" for p in PLATFORMS]
        subprocess.run([*cmd, *requirements], check=True)
        return list(json.loads(report.read_text())["install"])


def main() -> None:
    wanted = sorted(set(REQUIREMENTS) | set(server_requirements()))
    per_python = {py: resolve(wanted, py) for py in PYTHONS}
    here = resolve(SOURCE_ONLY, None)
    names = sorted(set().union(*per_python.values(), (n for n in here if n in ("seqeval", "pycuda"))))
    lines = [
        "# Exact versions the images install (pip install -c deploy/constraints.txt), generated by",
        "# deploy/docker/update_constraints.py with pip's resolver for Python " + " and ".join(PYTHONS) + ".",
        "# Regenerate it to move to newer versions, then rebuild and retest the images.",
    ]
    for name in names:
        versions = {py: per_python[py].get(name) for py in PYTHONS}
        if name in ("seqeval", "pycuda"):
            lines.append(f"{name}=={here[name]}")
        elif len(set(versions.values())) == 1:
            lines.append(f"{name}=={versions[PYTHONS[0]]}")
        else:
            lines.extend(f'{name}=={v} ; python_version == "{py}"' for py, v in versions.items() if v)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(names)} packages)")


if __name__ == "__main__":
    main()
