"""Lay out the Triton model repository: generated configs, model.py adapters, build outputs.

``write_configs`` writes what is committed (``config.pbtxt`` and ``model.py`` of every model);
``install_artifacts`` copies what a build produced (ONNX files, tokenizer, labels) next to them.
"""

from __future__ import annotations

import json
import logging
import shutil
from importlib import resources
from pathlib import Path

from ner_triton.errors import ModelLoadError
from ner_triton.repository.model_configs import RepositorySettings, all_configs, to_pbtxt
from ner_triton.schema import (
    BERT_PREFIX,
    LABELS_FILE,
    NER_META_FILE,
    ONNX_FP32,
    ONNX_INT8,
    ONNX_INT8_DYNAMIC,
    POSTPROCESS,
    PREPROCESS,
    TOKENIZER_DIR,
)

log = logging.getLogger(__name__)

DEFAULT_REPOSITORY = Path("model_repository")
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
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
    return repository


def settings_for_model(model_dir: Path, base: RepositorySettings | None = None) -> RepositorySettings:
    """Repository settings matching a fine-tuned model (casing input or not)."""
    from dataclasses import replace

    meta_path = model_dir / NER_META_FILE
    if not meta_path.is_file():
        raise ModelLoadError(f"{model_dir}: not a fine-tuned model ({NER_META_FILE} missing); run `make build`.")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    return replace(base or RepositorySettings(), use_casing=bool(meta["use_casing"]))


def install_artifacts(settings: RepositorySettings, artifacts: Path, repository: Path) -> Path:
    """Copy a build's outputs (``artifacts/model``, ``artifacts/onnx``) into ``repository``."""
    model_dir, onnx_dir = artifacts / "model", artifacts / "onnx"
    tok_dir = repository / PREPROCESS / "1" / TOKENIZER_DIR
    tok_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, tok_dir / name)
    if not (tok_dir / "tokenizer.json").is_file():
        raise ModelLoadError(f"{model_dir}: no tokenizer.json (a fast tokenizer is required); run `make build`.")
    shutil.copy2(model_dir / LABELS_FILE, repository / POSTPROCESS / "1" / LABELS_FILE)
    for variant in settings.variants:
        src = onnx_dir / ONNX_FILES[variant]
        if not src.is_file():
            raise ModelLoadError(f"{src} is missing; run `make build` first.")
        dst = repository / f"{BERT_PREFIX}{variant}" / "1" / "model.onnx"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    log.info("model repository ready: %s", repository)
    return repository


def export_repository(artifacts: Path, repository: Path = DEFAULT_REPOSITORY, backend: str = "python") -> Path:
    """Build step: configs for the model in ``artifacts`` plus its files, into ``repository``."""
    settings = settings_for_model(artifacts / "model")
    write_configs(settings, repository, backend)
    return install_artifacts(settings, artifacts, repository)


def main(argv: list[str] | None = None) -> int:
    """``make repository``: regenerate the committed configs (and install a build with --artifacts)."""
    import argparse
    import sys

    from ner_triton.errors import NerTritonError

    parser = argparse.ArgumentParser(prog="ner-repository", description=main.__doc__)
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--artifacts", type=Path, help="also install this build's model files (e.g. artifacts)")
    parser.add_argument(
        "--backend",
        choices=["python", "onnxruntime"],
        default="python",
        help="BERT steps on the python backend (local server) or Triton's onnxruntime backend (NGC container)",
    )
    args = parser.parse_args(argv)
    from ner_triton.logs import setup_logging

    setup_logging()
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
