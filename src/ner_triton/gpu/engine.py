"""Build TensorRT engines from the ONNX models (explicit quantization, strongly typed networks).

The INT8 engine is built from the symmetric QDQ model (``model_int8_trt.onnx``): the
QuantizeLinear/DequantizeLinear pairs in the graph decide what runs in INT8, so no calibrator and no
INT8/FP16 builder flags are used (implicit-quantization calibrators are deprecated in TensorRT 10, and
TensorRT 11 builds only strongly typed networks, where precision comes from the graph). The FP16
comparison engine is built from the FP32 graph converted to FP16 (:mod:`ner_triton.pipeline.fp16`).
Each engine has one optimization profile per sequence-length bucket and a manifest beside it.

``ner-engine`` writes a complete GPU model repository (``--backend tensorrt`` layout: the
``ner`` ensemble over ``ner_bert_trt``) with the INT8 engine as ``ner_bert_trt/1/model.plan``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ner_triton.cli import Command
from ner_triton.errors import ConfigError, EngineError, ModelLoadError
from ner_triton.gpu.cuda import INSTALL_HINT, load_backend
from ner_triton.gpu.manifest import MANIFEST_FILE, PLAN_FILE, SERVING_TENSORRT, EngineManifest, release, sha256_file
from ner_triton.pipeline.gate import check_report
from ner_triton.repository.install import install_steps, settings_for_model
from ner_triton.repository.model_configs import layout_settings
from ner_triton.repository.render import configs_match, write_configs
from ner_triton.repository.rollout import declare_version, next_version, publish_version
from ner_triton.runtime.graph import lookup_table_rows
from ner_triton.schema import ATTENTION_MASK, MODEL_DIR, ONNX_DIR, REPORT_JSON
from ner_triton.settings import EngineSettings
from ner_triton.variants import TRT, Layout

log = logging.getLogger(__name__)


def import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(f"TensorRT is not installed ({exc}): {INSTALL_HINT}.") from exc
    return trt


def gpu_identity() -> tuple[str, str]:
    """(name, compute capability "major.minor") of CUDA device 0 (through :mod:`ner_triton.gpu.cuda`)."""
    return load_backend().device()


def clamp_id_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Clamp every id input to the rows of the table it indexes (``attention_mask`` to 0..1).

    TensorRT does not bounds-check Gather indices: an out-of-range id sent straight to ``ner_bert_trt``
    would read outside the embedding table (wrong results, or an illegal memory access that takes the
    instance's CUDA context down). ONNX Runtime rejects such ids and the CPU step validates them;
    here Max/Min nodes make every id valid inside the engine. Valid inputs are unchanged.
    """
    from onnx import helper, numpy_helper

    names = [i.name for i in model.graph.input]
    rows = lookup_table_rows(model, names)
    if ATTENTION_MASK in names:
        rows[ATTENTION_MASK] = 2
    for name, count in rows.items():
        lo, hi, clamped = f"{name}_min", f"{name}_max", f"{name}_clamped"
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(0, np.int64), lo),
                numpy_helper.from_array(np.array(count - 1, np.int64), hi),
            ]
        )
        for node in model.graph.node:
            node.input[:] = [clamped if i == name else i for i in node.input]
        model.graph.node.insert(0, helper.make_node("Max", [f"{name}_upper", lo], [clamped], name=f"{name}/clamp/Max"))
        model.graph.node.insert(0, helper.make_node("Min", [name, hi], [f"{name}_upper"], name=f"{name}/clamp/Min"))
    return model


def build_engine(
    onnx_path: Path, output_dir: Path, precision: str, settings: EngineSettings | None = None
) -> EngineManifest:
    """Build ``output_dir/model.plan`` from ``onnx_path`` and write its manifest; returns the manifest."""
    settings = settings or EngineSettings()
    trt = import_tensorrt()
    if not onnx_path.is_file():
        raise EngineError(f"{onnx_path} is missing; run `make build` first (it writes the ONNX models).")
    gpu_name, capability = gpu_identity()
    if release(trt.__version__) != release(SERVING_TENSORRT):
        log.warning(
            "TensorRT %s builds this engine; the serving image's is %s, and Triton will not load an engine built by "
            "another release: install the pinned one (pip install '.[gpu]') or build with `docker compose run engine`",
            trt.__version__,
            SERVING_TENSORRT,
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # always on in TensorRT 11
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    output_dir.mkdir(parents=True, exist_ok=True)
    clamped = output_dir / f"clamped_{onnx_path.name}"
    onnx.save(clamp_id_inputs(onnx.load(str(onnx_path))), str(clamped))
    parsed = parser.parse_from_file(str(clamped))
    clamped.unlink()
    if not parsed:
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path}: {errors}")
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    config.builder_optimization_level = settings.optimization_level
    profiles = settings.profiles()
    for shapes in profiles:
        profile = builder.create_optimization_profile()
        for name in inputs:
            profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)
    log.info(
        "building %s engine from %s: %d profiles, batch <= %d",
        precision,
        onnx_path.name,
        len(profiles),
        settings.max_batch_size,
    )
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build an engine from {onnx_path}; its log above says why.")
    seconds = time.perf_counter() - t0
    (output_dir / PLAN_FILE).write_bytes(bytes(serialized))
    manifest = EngineManifest(
        precision=precision,
        tensorrt_version=trt.__version__,
        gpu_name=gpu_name,
        compute_capability=capability,
        onnx_file=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        max_batch_size=settings.max_batch_size,
        buckets=settings.buckets,
        profiles=profiles,
        inputs=inputs,
        build_seconds=round(seconds, 1),
    )
    manifest.write(output_dir / MANIFEST_FILE)
    log.info(
        "%s engine: %s (%.1f MB, %.0f s)",
        precision,
        output_dir / PLAN_FILE,
        (output_dir / PLAN_FILE).stat().st_size / 1e6,
        seconds,
    )
    return manifest


def check_writable(repository: Path) -> None:
    """Fail before a build of minutes when ``repository`` cannot be written (finding 3 of issue 21: a host bind
    mount that did not exist is created by dockerd as root, and the engine image runs as uid 1000)."""
    probe = repository / f".write-check-{os.getpid()}"
    try:
        repository.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        owner = ""
        if repository.exists():
            st = repository.stat()
            owner = f", owned by uid {st.st_uid} gid {st.st_gid}"
        raise ConfigError(
            f"cannot write the model repository {repository} as uid {os.getuid()} ({exc.strerror or exc}{owner}). "
            "A bind mount that does not exist yet is created by dockerd as root: create it first and run as its "
            'owner (`mkdir -p model_repository_gpu && docker run --user "$(id -u):$(id -g)" ...`), or use the '
            "compose named volume (`docker compose --profile gpu run --rm engine`)."
        ) from exc


def export_gpu_repository(
    artifacts: Path,
    repository: Path,
    engine: EngineSettings,
    build: Callable[[Path, Path, str, EngineSettings], Any] = build_engine,
) -> Path:
    """The ``tensorrt`` layout of a build: configs, tokenizer and labels, and the INT8 engine that
    ``build(onnx, version_dir, "int8", engine)`` writes into ``ner_bert_trt/1``.

    Refused (:func:`~ner_triton.pipeline.gate.check_report`) when the build's report shows the TensorRT INT8
    form lost more F1 than the build's gate allows. The engine is built into a staging directory before
    anything in the repository changes, so a failed build leaves the served engine and its config untouched;
    then it becomes version N+1 of ``ner_bert_trt`` next to the served one and is declared (its config pins
    it, :func:`~ner_triton.repository.rollout.declare_version`), so a rollback to an older build loads too.
    """
    settings = layout_settings(replace(settings_for_model(artifacts / MODEL_DIR), engine=engine), Layout.TENSORRT)
    source = artifacts / ONNX_DIR / TRT.onnx_file
    if not source.is_file():
        raise ModelLoadError(f"{source} is missing; run `make build` (it writes the TensorRT INT8 form).")
    check_report(artifacts / REPORT_JSON, TRT)
    check_writable(repository)
    step = repository / TRT.triton_name
    step.mkdir(parents=True, exist_ok=True)
    version = next_version([step])
    staging = step / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build(source, staging, "int8", engine)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if version == 1 or not configs_match(settings, repository, Layout.TENSORRT):
        write_configs(settings, repository, Layout.TENSORRT, keep_pins=version > 1)
        install_steps(artifacts, repository)
    publish_version(step, staging, version)  # version N+1 next to the served one, then declared
    if version > 1:  # version 1 alone needs no pin (the committed config stays as generated)
        declare_version([step], version)
    log.info("GPU model repository ready: %s", repository)
    return repository


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="output of `make build`")
    parser.add_argument("--repository", type=Path, default=Layout.TENSORRT.directory)
    parser.add_argument("--buckets", default=",".join(map(str, EngineSettings().buckets)))
    parser.add_argument("--max-batch-size", type=int, default=EngineSettings().max_batch_size)


def _run(args: argparse.Namespace) -> int:
    try:
        buckets = tuple(int(b) for b in args.buckets.split(","))
    except ValueError as exc:
        raise ConfigError(f"--buckets {args.buckets!r} must be comma-separated lengths, e.g. 16,32,64,128.") from exc
    settings = EngineSettings(buckets=buckets, max_batch_size=args.max_batch_size)
    export_gpu_repository(args.artifacts, args.repository, settings)
    print(f"GPU model repository written: {args.repository}")
    return 0


main = Command(
    "ner-engine",
    "The GPU model repository (configs, tokenizer, labels, TensorRT INT8 engine) from a build.",
    _add_arguments,
    _run,
).main


if __name__ == "__main__":
    raise SystemExit(main())
