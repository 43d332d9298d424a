"""Put a build into a model repository while it may be served: the next version, atomically.

``export_repository`` is the build's last step (and ``ner-repository --artifacts``): when the
repository already serves a model with the same configs, tokenizer and labels, the new weights become
the next version of every BERT step (:func:`install_new_version`, one atomic rename each: a polling
server loads it and retires the old one while serving); otherwise configs and files are (re)written as
version 1. :func:`swap_in` replaces a version directory by a finished staging directory (the GPU engine).

Version 1 holds the committed ``model.py``: retiring it removes only its weights and bytecode, so the
checkout stays clean (Triton serves the latest version that has weights).
"""

from __future__ import annotations

import argparse
import compileall
import logging
import os
import shutil
from pathlib import Path

from ner_triton.cli import Command
from ner_triton.errors import ModelLoadError
from ner_triton.repository.install import install_artifacts, install_fused, served_record, served_settings
from ner_triton.repository.model_configs import RepositorySettings
from ner_triton.repository.render import configs_match, model_py, write_configs
from ner_triton.schema import ENSEMBLE, LABELS_FILE, MODEL_DIR, ONNX_DIR, POSTPROCESS, PREPROCESS, TOKENIZER_DIR
from ner_triton.variants import SERVED_FILES, Layout

log = logging.getLogger(__name__)


def versions(model_dir: Path) -> list[int]:
    """Numeric version directories of one BERT step that hold weights (model.onnx / model.plan), ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.name.isdigit() and any((p / name).is_file() for name in SERVED_FILES)
    )


def _same_file(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def retire_version(version_dir: Path) -> None:
    """Remove an old version; version 1 keeps its committed ``model.py`` (weights and bytecode go)."""
    if version_dir.name != "1":
        shutil.rmtree(version_dir)
        return
    for name in SERVED_FILES:
        (version_dir / name).unlink(missing_ok=True)
    shutil.rmtree(version_dir / "__pycache__", ignore_errors=True)


def install_new_version(settings: RepositorySettings, artifacts: Path, repository: Path, keep: int = 2) -> int:
    """Add a build's ONNX models as the next version of every BERT step, each made visible by one atomic
    rename, so a server polling the repository loads it and retires the old one while serving.

    Only the BERT weights change: a build with another tokenizer or label set cannot be rolled into a
    served ensemble (pre/postprocess would change under requests in flight) and raises instead.
    Versions older than the ``keep`` newest are removed. Returns the new version number.
    """
    model_dir, onnx_dir = artifacts / MODEL_DIR, artifacts / ONNX_DIR
    if not _same_file(model_dir / "tokenizer.json", repository / PREPROCESS / "1" / TOKENIZER_DIR / "tokenizer.json"):
        raise ModelLoadError("the new build has another tokenizer than the served one: deploy a new repository.")
    if not _same_file(model_dir / LABELS_FILE, repository / POSTPROCESS / "1" / LABELS_FILE):
        raise ModelLoadError("the new build has other labels than the served one: deploy a new repository.")
    steps = [repository / v.triton_name for v in settings.variants]
    fused = repository / ENSEMBLE
    if (fused / "1" / "model.py").is_file():  # the python layout's one-step ``ner`` (an ensemble has no model.py)
        steps.append(fused)
    version = 1 + max((max(versions(d), default=0) for d in steps), default=0)
    record = served_record(artifacts) if fused in steps else {}
    for step in steps:
        staging = step / f".staging-{version}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        if step == fused:
            install_fused(settings, artifacts, staging, record)
        else:
            variant = next(v for v in settings.variants if v.triton_name == step.name)
            src = onnx_dir / variant.onnx_file
            if not src.is_file():
                raise ModelLoadError(f"{src} is missing; run `make build` first.")
            shutil.copy2(src, staging / variant.served_file)
        (staging / "model.py").write_text(model_py(step.name), encoding="utf-8")
        compileall.compile_dir(str(staging), quiet=1)  # the stub finds bytecode: nothing changes after the rename
        os.replace(staging, step / str(version))
        for old in versions(step)[:-keep]:
            retire_version(step / str(old))
    log.info("installed version %d of %s", version, ", ".join(s.name for s in steps))
    return version


def export_repository(
    artifacts: Path, repository: Path = Layout.PYTHON.directory, layout: Layout = Layout.PYTHON
) -> Path:
    """Build step: the model in ``artifacts`` into ``repository`` (a rolling update when it can be one)."""
    if layout is Layout.TENSORRT:
        raise ModelLoadError(
            "the GPU layout needs a TensorRT engine: run `ner-engine --artifacts ...` on the GPU host."
        )
    settings = served_settings(artifacts)  # refuses a build that failed its gate
    served = any(versions(repository / v.triton_name) for v in settings.variants)
    if layout is Layout.PYTHON and served and configs_match(settings, repository, layout):
        try:
            install_new_version(settings, artifacts, repository)
            return repository
        except ModelLoadError as exc:
            log.warning("not a rolling update (%s); replacing the repository's model", exc)
    for step in [repository / v.triton_name for v in settings.variants] + [repository / ENSEMBLE]:
        for old in versions(step):
            if old != 1:
                shutil.rmtree(step / str(old))
    write_configs(settings, repository, layout)
    return install_artifacts(settings, artifacts, repository, layout)


def swap_in(staging: Path, version_dir: Path) -> None:
    """Replace ``version_dir`` by the finished ``staging`` directory (two renames; the old one is removed)."""
    old = version_dir.parent / f".old-{version_dir.name}"
    shutil.rmtree(old, ignore_errors=True)
    if version_dir.exists():
        os.replace(version_dir, old)
    os.replace(staging, version_dir)
    shutil.rmtree(old, ignore_errors=True)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repository",
        type=Path,
        help=", ".join(f"default: {x.directory} ({x.value})" for x in Layout),
    )
    parser.add_argument("--artifacts", type=Path, help="also install this build's model files (e.g. artifacts)")
    parser.add_argument(
        "--layout",
        "--backend",
        dest="layout",
        choices=[x.value for x in Layout],
        default=Layout.PYTHON.value,
        help="BERT steps on the python backend (local server), Triton's onnxruntime backend (NGC container, "
        "CPU) or TensorRT (NGC container, GPU: configs only here; `ner-engine` builds the engine)",
    )


def _run(args: argparse.Namespace) -> int:
    layout = Layout(args.layout)
    repository = args.repository or layout.directory
    if args.artifacts:
        export_repository(args.artifacts, repository, layout)
    else:
        write_configs(RepositorySettings(), repository, layout)
    print(f"model repository written: {repository}")
    return 0


main = Command(
    "ner-repository",
    "Regenerate the committed configs and model.py files of a model repository (and install a build with --artifacts).",
    _add_arguments,
    _run,
).main


if __name__ == "__main__":
    raise SystemExit(main())
