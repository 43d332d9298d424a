"""Put a build's outputs (``artifacts/model``, ``artifacts/onnx``) into a model repository.

Copies what the build produced - tokenizer files, the label set, one ONNX file per served variant -
next to the configs that :mod:`~ner_triton.repository.render` writes. Engines (the ``trt`` variant)
are not build outputs here: ``ner-engine`` builds and installs them on the GPU host.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from ner_triton.errors import ModelLoadError
from ner_triton.repository.model_configs import RepositorySettings
from ner_triton.schema import LABELS_FILE, MODEL_DIR, NER_META_FILE, ONNX_DIR, POSTPROCESS, PREPROCESS, TOKENIZER_DIR

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def settings_for_model(model_dir: Path, base: RepositorySettings | None = None) -> RepositorySettings:
    """Repository settings matching a fine-tuned model (casing input or not)."""
    meta_path = model_dir / NER_META_FILE
    if not meta_path.is_file():
        raise ModelLoadError(f"{model_dir}: not a fine-tuned model ({NER_META_FILE} missing); run `make build`.")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return replace(base or RepositorySettings(), use_casing=bool(meta["use_casing"]))


def install_steps(artifacts: Path, repository: Path) -> None:
    """The tokenizer (pre step) and the label set (post step) of the build in ``artifacts``."""
    model_dir = artifacts / MODEL_DIR
    tok_dir = repository / PREPROCESS / "1" / TOKENIZER_DIR
    tok_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, tok_dir / name)
    if not (tok_dir / "tokenizer.json").is_file():
        raise ModelLoadError(f"{model_dir}: no tokenizer.json (a fast tokenizer is required); run `make build`.")
    shutil.copy2(model_dir / LABELS_FILE, repository / POSTPROCESS / "1" / LABELS_FILE)


def install_artifacts(settings: RepositorySettings, artifacts: Path, repository: Path) -> Path:
    """Copy a build's outputs into ``repository`` as version 1: tokenizer, labels, each ONNX variant's file.

    Variants served from an engine (``platform: tensorrt_plan``) are installed by their builder."""
    install_steps(artifacts, repository)
    for variant in (v for v in settings.variants if not v.from_engine):
        src = artifacts / ONNX_DIR / variant.onnx_file
        if not src.is_file():
            raise ModelLoadError(f"{src} is missing; run `make build` first.")
        dst = repository / variant.triton_name / "1" / variant.served_file
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    log.info("model repository ready: %s", repository)
    return repository
