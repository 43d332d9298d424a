"""What an engine was built from and for, written beside ``model.plan``.

A TensorRT engine only runs on the TensorRT release (major.minor.patch) that built it and on GPUs of the
same compute capability. The manifest records both (plus the ONNX file's sha256, the precision and the
optimization profiles), and :func:`check_compatible` refuses a mismatched engine with a message
that says how to rebuild, instead of TensorRT's deserialization error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ner_triton.errors import EngineError
from ner_triton.schema import PLAN_MODEL_FILE

log = logging.getLogger(__name__)

MANIFEST_FILE = "engine.json"
PLAN_FILE = PLAN_MODEL_FILE  # the name the tensorrt backend loads (variants.TRT.served_file)
PRECISIONS = ("int8", "fp16")
# The TensorRT of the serving image, nvcr.io/nvidia/tritonserver:24.10-py3 (deploy/docker, TRITON_TAG): the
# `gpu` extra pins exactly this release (pyproject.toml). Not 24.10-trtllm-python-py3: it ships TensorRT 10.4.
SERVING_TENSORRT = "10.5.0"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class EngineManifest:
    precision: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    onnx_file: str
    onnx_sha256: str
    max_batch_size: int
    buckets: tuple[int, ...]
    profiles: list[dict[str, Any]]
    inputs: list[str]
    build_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineError(f"precision {self.precision!r} is not one of {PRECISIONS}.")

    def write(self, path: Path) -> Path:
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> EngineManifest:
        if not path.is_file():
            raise EngineError(
                f"{path} is missing: engines are only loaded with the manifest `ner-engine` writes beside them; "
                "rebuild the engine with `ner-engine` (or `docker compose run engine`)."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data["buckets"] = tuple(data["buckets"])
            return cls(**data)
        except (ValueError, TypeError, KeyError) as exc:
            raise EngineError(
                f"{path} is not an engine manifest ({exc}); rebuild the engine with `ner-engine`."
            ) from exc


def release(version: str) -> tuple[int, int, int]:
    """major.minor.patch of a TensorRT version string: ``10.5.0``, ``10.5.0.18`` (an NGC image's build number)
    and ``10.5.0.post1`` (a re-packaged wheel) are the same release, whose engines are interchangeable."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version.strip())
    if match is None:
        raise EngineError(f"{version!r} is not a TensorRT version (expected major.minor.patch, e.g. 10.5.0).")
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


def check_compatible(
    manifest: EngineManifest, tensorrt_version: str, gpu_name: str, compute_capability: str, source: str = "engine"
) -> None:
    """Raise :class:`EngineError` when ``manifest`` was built for another TensorRT or compute capability.

    A different GPU name with the same compute capability (e.g. H100 PCIe vs SXM) runs, but is logged:
    the engine's kernels were timed on the other GPU.
    """
    problems = []
    if release(manifest.tensorrt_version) != release(tensorrt_version):
        problems.append(f"TensorRT {manifest.tensorrt_version} built it, this is TensorRT {tensorrt_version}")
    if manifest.compute_capability != compute_capability:
        problems.append(
            f"it was built for compute capability {manifest.compute_capability} ({manifest.gpu_name}), "
            f"this GPU is {compute_capability} ({gpu_name})"
        )
    if problems:
        raise EngineError(
            f"{source} cannot run here: {'; '.join(problems)}. Engines are not portable: rebuild it on this "
            "machine with `ner-engine --artifacts artifacts --repository model_repository_gpu` (or `docker compose "
            "run engine`, which uses the TensorRT of the serving image)."
        )
    if manifest.gpu_name != gpu_name:
        log.warning("%s was built on %s and runs on %s (same compute capability)", source, manifest.gpu_name, gpu_name)
