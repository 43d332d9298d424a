"""Lay out the Triton model repository: generated configs, model.py adapters, build outputs.

``write_configs`` writes what is committed (``config.pbtxt`` and ``model.py`` of every model);
``install_artifacts`` copies what a build produced (ONNX files, tokenizer, labels) next to them.
"""

from __future__ import annotations

import compileall
import json
import logging
import os
import shutil
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from ner_triton.errors import ModelLoadError
from ner_triton.repository.model_configs import (
    TRT_VARIANT,
    RepositorySettings,
    all_configs,
    layout_settings,
    to_pbtxt,
)
from ner_triton.schema import (
    BERT_PREFIX,
    LABELS_FILE,
    NER_META_FILE,
    ONNX_DIR,
    ONNX_FP32,
    ONNX_INT8,
    ONNX_INT8_DYNAMIC,
    ONNX_INT8_TRT,
    POSTPROCESS,
    PREPROCESS,
    TOKENIZER_DIR,
)

log = logging.getLogger(__name__)

DEFAULT_REPOSITORY = Path("model_repository")
# Each layout has its own directory, so writing the NGC or GPU layout never touches the committed one.
LAYOUT_DIRECTORIES = {
    "python": DEFAULT_REPOSITORY,
    "onnxruntime": Path("model_repository_ngc"),
    "tensorrt": Path("model_repository_gpu"),
}
ONNX_FILES = {"int8": ONNX_INT8, "fp32": ONNX_FP32, "int8_dynamic": ONNX_INT8_DYNAMIC}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def adapter_source(model_name: str) -> str:
    """The model.py text for a python-backend model of the repository."""
    kind = "preprocess" if model_name == PREPROCESS else "postprocess" if model_name == POSTPROCESS else "bert"
    return resources.files("ner_triton.repository.adapters").joinpath(f"{kind}.py").read_text(encoding="utf-8")


def expected_files(settings: RepositorySettings, backend: str = "python") -> dict[str, str]:
    """Relative path -> content of every committed file of the repository.

    ``backend="onnxruntime"`` gives the NGC-container layout: the BERT steps on Triton's onnxruntime
    backend (no model.py), pre/post still on the python backend.
    """
    files = {}
    for cfg in all_configs(settings, backend):
        files[f"{cfg.name}/config.pbtxt"] = to_pbtxt(cfg)
        if cfg.backend == "python":
            files[f"{cfg.name}/1/model.py"] = adapter_source(cfg.name)
        else:
            files[f"{cfg.name}/1/.gitkeep"] = ""
    return files


def write_configs(settings: RepositorySettings, repository: Path, backend: str = "python") -> Path:
    """Write every config.pbtxt and model.py into ``repository``; returns it."""
    for rel, content in expected_files(settings, backend).items():
        path = repository / rel
        if path.is_file() and path.read_text(encoding="utf-8") == content:
            continue  # untouched files keep their mtime: a polling server sees no change
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return repository


def configs_match(settings: RepositorySettings, repository: Path, backend: str = "python") -> bool:
    """True when ``repository`` already holds exactly the ``config.pbtxt`` files ``settings`` generate."""
    return all(
        (repository / rel).is_file() and (repository / rel).read_text(encoding="utf-8") == text
        for rel, text in expected_files(settings, backend).items()
        if rel.endswith("config.pbtxt")
    )


def versions(model_dir: Path) -> list[int]:
    """Numeric version directories of one BERT step that hold weights (model.onnx / model.plan), ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in model_dir.iterdir()
        if p.name.isdigit() and ((p / "model.onnx").is_file() or (p / "model.plan").is_file())
    )


def _same_file(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()


def retire_version(version_dir: Path) -> None:
    """Remove an old version. Version 1 holds the committed ``model.py``: only its weights and bytecode go,
    so the checkout stays clean (Triton serves the latest version that has weights)."""
    if version_dir.name != "1":
        shutil.rmtree(version_dir)
        return
    for name in ("model.onnx", "model.plan"):
        (version_dir / name).unlink(missing_ok=True)
    shutil.rmtree(version_dir / "__pycache__", ignore_errors=True)


def install_new_version(settings: RepositorySettings, artifacts: Path, repository: Path, keep: int = 2) -> int:
    """Add a build's ONNX models as the next version of every BERT step, each made visible by one atomic
    rename, so a server polling the repository loads it and retires the old one while serving.

    Only the BERT weights change: a build with another tokenizer or label set cannot be rolled into a
    served ensemble (pre/postprocess would change under requests in flight) and raises instead.
    Versions older than the ``keep`` newest are removed. Returns the new version number.
    """
    model_dir, onnx_dir = artifacts / "model", artifacts / "onnx"
    if not _same_file(model_dir / "tokenizer.json", repository / PREPROCESS / "1" / TOKENIZER_DIR / "tokenizer.json"):
        raise ModelLoadError("the new build has another tokenizer than the served one: deploy a new repository.")
    if not _same_file(model_dir / LABELS_FILE, repository / POSTPROCESS / "1" / LABELS_FILE):
        raise ModelLoadError("the new build has other labels than the served one: deploy a new repository.")
    steps = [repository / f"{BERT_PREFIX}{v}" for v in settings.variants]
    version = 1 + max((max(versions(d), default=0) for d in steps), default=0)
    for variant, step in zip(settings.variants, steps, strict=True):
        src = onnx_dir / ONNX_FILES[variant]
        if not src.is_file():
            raise ModelLoadError(f"{src} is missing; run `make build` first.")
        staging = step / f".staging-{version}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(src, staging / "model.onnx")
        (staging / "model.py").write_text(adapter_source(step.name), encoding="utf-8")
        compileall.compile_dir(str(staging), quiet=1)  # the stub finds bytecode: nothing changes after the rename
        os.replace(staging, step / str(version))
        for old in versions(step)[:-keep]:
            retire_version(step / str(old))
    log.info("installed version %d of %s", version, ", ".join(s.name for s in steps))
    return version


def settings_for_model(model_dir: Path, base: RepositorySettings | None = None) -> RepositorySettings:
    """Repository settings matching a fine-tuned model (casing input or not)."""
    from dataclasses import replace

    meta_path = model_dir / NER_META_FILE
    if not meta_path.is_file():
        raise ModelLoadError(f"{model_dir}: not a fine-tuned model ({NER_META_FILE} missing); run `make build`.")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return replace(base or RepositorySettings(), use_casing=bool(meta["use_casing"]))


def install_artifacts(settings: RepositorySettings, artifacts: Path, repository: Path) -> Path:
    """Copy a build's outputs (``artifacts/model``, ``artifacts/onnx``) into ``repository``.

    Variants without an ONNX file of their own (the TensorRT engine) are installed by their builder."""
    model_dir, onnx_dir = artifacts / "model", artifacts / "onnx"
    tok_dir = repository / PREPROCESS / "1" / TOKENIZER_DIR
    tok_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, tok_dir / name)
    if not (tok_dir / "tokenizer.json").is_file():
        raise ModelLoadError(f"{model_dir}: no tokenizer.json (a fast tokenizer is required); run `make build`.")
    shutil.copy2(model_dir / LABELS_FILE, repository / POSTPROCESS / "1" / LABELS_FILE)
    for variant in (v for v in settings.variants if v in ONNX_FILES):
        src = onnx_dir / ONNX_FILES[variant]
        if not src.is_file():
            raise ModelLoadError(f"{src} is missing; run `make build` first.")
        dst = repository / f"{BERT_PREFIX}{variant}" / "1" / "model.onnx"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    log.info("model repository ready: %s", repository)
    return repository


def export_repository(artifacts: Path, repository: Path = DEFAULT_REPOSITORY, backend: str = "python") -> Path:
    """Build step: the model in ``artifacts`` into ``repository``.

    When the repository already serves a model with the same configs, tokenizer and labels, the new
    weights become the next version of the BERT steps (:func:`install_new_version`: a polling server
    swaps versions without downtime); otherwise configs and files are (re)written as version 1.
    """
    if backend == "tensorrt":
        raise ModelLoadError(
            "the GPU layout needs a TensorRT engine: run `ner-engine --artifacts ...` on the GPU host."
        )
    settings = settings_for_model(artifacts / "model")
    served = any(versions(repository / f"{BERT_PREFIX}{v}") for v in settings.variants)
    if backend == "python" and served and configs_match(settings, repository, backend):
        try:
            install_new_version(settings, artifacts, repository)
            return repository
        except ModelLoadError as exc:
            log.warning("not a rolling update (%s); replacing the repository's model", exc)
    for v in settings.variants:
        step = repository / f"{BERT_PREFIX}{v}"
        for old in versions(step):
            if old != 1:
                shutil.rmtree(step / str(old))
    write_configs(settings, repository, backend)
    return install_artifacts(settings, artifacts, repository)


def export_gpu_repository(
    artifacts: Path,
    repository: Path,
    engine: Any,
    build_engine: Callable[[Path, Path, str, Any], Any],
) -> Path:
    """The ``tensorrt`` layout of a build: configs, tokenizer and labels, and the INT8 engine that
    ``build_engine(onnx, version_dir, "int8", engine_settings)`` writes into ``ner_bert_trt/1``.

    Refused when the build's report shows the TensorRT INT8 form lost more F1 than the build's gate allows.
    The engine is built into a staging directory before anything in the repository changes, so a failed
    build leaves the served engine and its config untouched; then configs are written and the new version
    directory is swapped in by two renames.
    """
    from dataclasses import replace

    from ner_triton.errors import QualityGateError

    settings = layout_settings(replace(settings_for_model(artifacts / "model"), engine=engine), "tensorrt")
    source = artifacts / ONNX_DIR / ONNX_INT8_TRT
    if not source.is_file():
        raise ModelLoadError(f"{source} is missing; run `make build` (it writes the TensorRT INT8 form).")
    report_path = artifacts / "report.json"
    if report_path.is_file():
        report = json.loads(report_path.read_text(encoding="utf-8"))
        variant = report.get("variants", {}).get("onnx_int8_trt")
        limit = report.get("gate", {}).get("max_f1_drop_points")
        if variant and limit is not None and -variant["delta_f1_points"] > limit:
            raise QualityGateError(
                f"onnx_int8_trt lost {-variant['delta_f1_points']:.2f} F1 points (gate {limit}) in {report_path}: "
                "the GPU engine would serve a worse model. Rebuild with more CALIB_SENTENCES or epochs (README, "
                "GPU path), or rebuild with a larger MAX_F1_DROP if that loss is acceptable."
            )
    step = repository / f"{BERT_PREFIX}{TRT_VARIANT}"
    step.mkdir(parents=True, exist_ok=True)
    staging = step / ".staging-1"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build_engine(source, staging, "int8", engine)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    write_configs(settings, repository, "tensorrt")
    install_artifacts(settings, artifacts, repository)
    old = step / ".old-1"
    shutil.rmtree(old, ignore_errors=True)
    if (step / "1").exists():
        os.replace(step / "1", old)
    os.replace(staging, step / "1")
    shutil.rmtree(old, ignore_errors=True)
    log.info("GPU model repository ready: %s", repository)
    return repository


def main(argv: list[str] | None = None) -> int:
    """``make repository``: regenerate the committed configs (and install a build with --artifacts)."""
    import argparse
    import sys

    from ner_triton.errors import NerTritonError

    parser = argparse.ArgumentParser(prog="ner-repository", description=main.__doc__)
    parser.add_argument(
        "--repository",
        type=Path,
        help="default: model_repository (python), model_repository_ngc (onnxruntime), model_repository_gpu (tensorrt)",
    )
    parser.add_argument("--artifacts", type=Path, help="also install this build's model files (e.g. artifacts)")
    parser.add_argument(
        "--backend",
        choices=["python", "onnxruntime", "tensorrt"],
        default="python",
        help="BERT steps on the python backend (local server), Triton's onnxruntime backend (NGC container, "
        "CPU) or TensorRT (NGC container, GPU: configs only here; `ner-engine` builds the engine)",
    )
    args = parser.parse_args(argv)
    from ner_triton.logs import setup_logging

    setup_logging()
    if args.repository is None:
        args.repository = LAYOUT_DIRECTORIES[args.backend]
    try:
        if args.artifacts:
            export_repository(args.artifacts, args.repository, args.backend)
        else:
            write_configs(RepositorySettings(), args.repository, args.backend)
    except NerTritonError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model repository written: {args.repository}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
