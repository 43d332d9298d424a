"""Put a build's outputs (``artifacts/model``, ``artifacts/onnx``) into a model repository.

Copies what the build produced - tokenizer files, the label set, one ONNX file per variant, and on the
python layout the fused ``ner`` model's files - next to the configs that :mod:`~ner_triton.repository.render`
writes. Every route that installs a build goes through :func:`served_settings`, which reads the build's record
(:class:`~ner_triton.record.BuildReport`) and refuses a build whose served variant did not pass the accuracy gate
(or that has no report, or one from an earlier release). Engines (the ``trt`` variant) are not build outputs
here: ``ner-engine`` builds and installs them on the GPU host.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from ner_triton.errors import ModelLoadError, QualityGateError
from ner_triton.record import BuildReport, Served
from ner_triton.repository.model_configs import RepositorySettings, fused_front
from ner_triton.schema import (
    ENSEMBLE,
    LABELS_FILE,
    MODEL_DIR,
    NER_META_FILE,
    ONNX_DIR,
    ONNX_MODEL_FILE,
    POSTPROCESS,
    PREPROCESS,
    REPORT_JSON,
    SERVED_FILE,
    TOKENIZER_DIR,
)
from ner_triton.variants import VARIANTS, Layout

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def settings_for_model(model_dir: Path, base: RepositorySettings | None = None) -> RepositorySettings:
    """Repository settings matching a fine-tuned model (casing input or not)."""
    meta_path = model_dir / NER_META_FILE
    if not meta_path.is_file():
        raise ModelLoadError(f"{model_dir}: not a fine-tuned model ({NER_META_FILE} missing); run `make build`.")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return replace(base or RepositorySettings(), use_casing=bool(meta["use_casing"]))


def served_record(artifacts: Path) -> Served:
    """The build's served choice (its :class:`~ner_triton.record.BuildReport`); refused when the build did not pass
    its gate.

    Raises:
        ModelLoadError: no report (not a finished build) or a report from an earlier release.
        QualityGateError: the build's served variant (or every candidate) failed the accuracy gate.
    """
    path = artifacts / REPORT_JSON
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: only a finished build can be installed; run `make build`.")
    report = BuildReport.load(path)
    served, gate = report.served, report.gate
    if not served.passed or served.variant is None or not gate.passed:
        failures = "; ".join(served.failures or gate.failures or ("no variant passed",))
        raise QualityGateError(
            f"the build in {artifacts} failed its accuracy gate ({failures}): it is not installed. "
            "Fix the build (docs/int8.md) or rebuild with a larger MAX_F1_DROP if that loss is acceptable."
        )
    return served


def served_settings(artifacts: Path, base: RepositorySettings | None = None) -> RepositorySettings:
    """Repository settings for the build in ``artifacts``: its casing input, and its served variant first
    (``ner`` serves it), after checking the gate (:func:`served_record`)."""
    settings = settings_for_model(artifacts / MODEL_DIR, base)
    key = served_record(artifacts).variant
    assert key is not None  # served_record refuses a build that serves nothing
    served = VARIANTS[key]
    return replace(settings, variants=(served, *(v for v in settings.variants if v.key != key)))


def install_steps(artifacts: Path, repository: Path) -> None:
    """The tokenizer (pre step) and the label set (post step) of the build in ``artifacts``."""
    model_dir = artifacts / MODEL_DIR
    copy_tokenizer(model_dir, repository / PREPROCESS / "1" / TOKENIZER_DIR)
    shutil.copyfile(model_dir / LABELS_FILE, repository / POSTPROCESS / "1" / LABELS_FILE)


def copy_tokenizer(model_dir: Path, tok_dir: Path) -> None:
    tok_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, tok_dir / name)
    if not (tok_dir / "tokenizer.json").is_file():
        raise ModelLoadError(f"{model_dir}: no tokenizer.json (a fast tokenizer is required); run `make build`.")


def install_fused(settings: RepositorySettings, artifacts: Path, version_dir: Path, record: Served) -> None:
    """The fused ``ner`` model's version directory: the served variant's ONNX file, tokenizer, labels and
    ``served.json`` (``record``: the build's choice and figures, from :func:`served_record`)."""
    model_dir = artifacts / MODEL_DIR
    src = artifacts / ONNX_DIR / settings.served.onnx_file
    if not src.is_file():
        raise ModelLoadError(f"{src} is missing; run `make build` first.")
    version_dir.mkdir(parents=True, exist_ok=True)
    copy_tokenizer(model_dir, version_dir / TOKENIZER_DIR)
    shutil.copyfile(model_dir / LABELS_FILE, version_dir / LABELS_FILE)
    (version_dir / SERVED_FILE).write_text(json.dumps(record.as_dict(), indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(src, version_dir / ONNX_MODEL_FILE)


def install_artifacts(
    settings: RepositorySettings, artifacts: Path, repository: Path, layout: Layout = Layout.PYTHON
) -> Path:
    """Copy a build's outputs into ``repository`` as version 1: tokenizer, labels, each ONNX variant's file
    (and the fused ``ner`` model on the python layout). The build's gate is checked first (:func:`served_record`).

    Variants served from an engine (``platform: tensorrt_plan``) are installed by their builder."""
    record = served_record(artifacts)
    install_steps(artifacts, repository)
    for variant in (v for v in settings.variants if not v.from_engine):
        src = artifacts / ONNX_DIR / variant.onnx_file
        if not src.is_file():
            raise ModelLoadError(f"{src} is missing; run `make build` first.")
        dst = repository / variant.triton_name / "1" / variant.served_file
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    if fused_front(layout):
        install_fused(settings, artifacts, repository / ENSEMBLE / "1", record)
    log.info("model repository ready: %s (ner serves %s)", repository, settings.served.key)
    return repository
