"""Put a build into a model repository while it may be served: the next version, atomically, then declared.

``export_repository`` is the build's last step (and ``ner-repository --artifacts``): when the
repository already serves a model with the same configs, tokenizer and labels - on every layout (python,
onnxruntime; the TensorRT engine goes the same way through :func:`publish_version`) - the new weights become
version N+1 of every BERT step (:func:`install_new_version`, one atomic rename each), a rollback to an older
build included; otherwise configs and files are (re)written as version 1.

A new version is served only once it is **declared**: :func:`pin_version` writes
``version_policy { specific { versions: N } }`` into the step's ``config.pbtxt`` (through the protobuf model
config, one atomic rename), after every file of version N is in place. A server loads exactly the pinned version -
at start, on a repository-API load (``ner-rollout``, explicit model control) or when polling - never "the newest
directory present", so a server started later joins on the declared version even while a newer one is still
being copied or uploaded.

Version 1 holds the committed ``model.py``: retiring it removes only its weights and bytecode, so the
checkout stays clean. An unpinned config (the committed one) serves the newest version, which is 1 there.
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
from ner_triton.repository.model_configs import RepositorySettings, parse_pbtxt, to_pbtxt
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


def pinned_version(step: Path) -> int | None:
    """The version ``step``'s config.pbtxt declares (``version_policy.specific``), or None when unpinned."""
    cfg = parse_pbtxt((step / "config.pbtxt").read_text(encoding="utf-8"))
    if cfg.version_policy.WhichOneof("policy_choice") != "specific":
        return None
    pinned = list(cfg.version_policy.specific.versions)
    return pinned[0] if len(pinned) == 1 else None


def pin_version(step: Path, version: int) -> None:
    """Declare ``version`` the one ``step`` serves: ``version_policy { specific { versions: N } }`` in its
    config.pbtxt, written through the protobuf model config and made visible by one atomic rename."""
    path = step / "config.pbtxt"
    cfg = parse_pbtxt(path.read_text(encoding="utf-8"))
    if not (step / str(version)).is_dir():
        raise ModelLoadError(f"{step / str(version)} does not exist: install the version before declaring it.")
    cfg.version_policy.specific.versions[:] = [version]
    tmp = path.with_name(".config.pbtxt.tmp")
    tmp.write_text(to_pbtxt(cfg), encoding="utf-8")
    os.replace(tmp, path)
    log.info("%s: version %d declared", step.name, version)


def next_version(steps: list[Path]) -> int:
    """One more than the newest version (with weights) of any of ``steps``: every step gets the same number."""
    return 1 + max((max(versions(d), default=0) for d in steps), default=0)


def publish_version(step: Path, staging: Path, version: int) -> None:
    """Make a finished ``staging`` directory version ``version`` of ``step`` (one atomic rename). Not served yet:
    :func:`pin_version` declares it."""
    compileall.compile_dir(str(staging), quiet=1)  # the stub finds bytecode: nothing changes after the rename
    target = step / str(version)
    if target.is_dir():  # a version without weights, e.g. the committed ``1/`` (.gitkeep, model.py): fill it
        for item in staging.iterdir():
            shutil.rmtree(target / item.name, ignore_errors=True)
            os.replace(item, target / item.name)
        staging.rmdir()
        return
    os.replace(staging, target)


def declare_version(steps: list[Path], version: int, keep: int = 2) -> None:
    """Pin ``version`` in every step (after all of them hold it), then remove versions older than the ``keep``
    newest (a server that has not loaded the new one yet keeps serving the previous one)."""
    for step in steps:
        pin_version(step, version)
    for step in steps:
        for old in versions(step)[:-keep]:
            if old != version:
                retire_version(step / str(old))


def install_new_version(
    settings: RepositorySettings,
    artifacts: Path,
    repository: Path,
    keep: int = 2,
    layout: Layout = Layout.PYTHON,
    declare: bool = True,
) -> int:
    """Add a build's ONNX models as version N+1 of every BERT step (and the python layout's one-step ``ner``),
    each made visible by one atomic rename, then declare it (:func:`declare_version`; ``declare=False`` leaves
    the servers on the version declared before, as a half-finished upload would).

    Only the BERT weights change: a build with another tokenizer or label set cannot be rolled into a
    served ensemble (pre/postprocess would change under requests in flight) and raises instead.
    Versions older than the ``keep`` newest are removed. Returns the new version number.
    """
    model_dir, onnx_dir = artifacts / MODEL_DIR, artifacts / ONNX_DIR
    if not _same_file(model_dir / "tokenizer.json", repository / PREPROCESS / "1" / TOKENIZER_DIR / "tokenizer.json"):
        raise ModelLoadError("the new build has another tokenizer than the served one: deploy a new repository.")
    if not _same_file(model_dir / LABELS_FILE, repository / POSTPROCESS / "1" / LABELS_FILE):
        raise ModelLoadError("the new build has other labels than the served one: deploy a new repository.")
    steps = [repository / v.triton_name for v in settings.variants if not v.from_engine]
    fused = repository / ENSEMBLE
    if (fused / "1" / "model.py").is_file():  # the python layout's one-step ``ner`` (an ensemble has no model.py)
        steps.append(fused)
    version = next_version(steps)
    record = served_record(artifacts)
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
            shutil.copyfile(src, staging / variant.served_file)
        if layout is Layout.PYTHON:  # python-backend steps; the onnxruntime backend's read only model.onnx
            (staging / "model.py").write_text(model_py(step.name), encoding="utf-8")
        publish_version(step, staging, version)
    if declare:
        declare_version(steps, version, keep)
    log.info("installed version %d of %s%s", version, ", ".join(s.name for s in steps),
             "" if declare else " (not declared: servers stay on the declared version)")  # fmt: skip
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
    if served and configs_match(settings, repository, layout):
        try:
            install_new_version(settings, artifacts, repository, layout=layout)
            return repository
        except ModelLoadError as exc:
            log.warning("not a rolling update (%s); replacing the repository's model (restart its servers)", exc)
    for step in [repository / v.triton_name for v in settings.variants] + [repository / ENSEMBLE]:
        for old in versions(step):
            if old != 1:
                shutil.rmtree(step / str(old))
    write_configs(settings, repository, layout, keep_pins=False)
    return install_artifacts(settings, artifacts, repository, layout)


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
