"""TensorRT engines on a real GPU: build from the tiny model's ONNX, run with the engine runner, compare
with ONNX Runtime. Skipped, with the reason, where TensorRT, a CUDA binding (cuda-python or pycuda) or a CUDA
device is missing (`scripts/gpu_check.sh` is the full acceptance run on the default model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def gpu() -> None:
    """Skips before the tiny build is made when there is no GPU to use it on."""
    from ner_triton.errors import EngineError
    from ner_triton.gpu.cuda import load_backend

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("tensorrt is not installed: GPU tests need an NVIDIA GPU and `pip install '.[gpu]'`")
    try:
        load_backend()
    except EngineError as exc:
        pytest.skip(f"CUDA is not usable here: {exc}")


@pytest.mark.parametrize(("precision", "agreement"), [("int8", 0.8), ("fp16", 0.95)])
def test_engine_matches_onnx_runtime(gpu, tiny_build, tmp_path: Path, precision: str, agreement: float) -> None:  # type: ignore[no-untyped-def]
    """Same argmax as ONNX Runtime on the same graph for most tokens (INT8 kernels round differently, and the
    tiny random model's logits are close together, so INT8 is held to less)."""
    import onnxruntime as ort

    from ner_triton.gpu.engine import build_engine
    from ner_triton.gpu.manifest import PLAN_FILE, EngineManifest
    from ner_triton.gpu.runner import TrtRunner
    from ner_triton.pipeline.fp16 import convert_to_fp16
    from ner_triton.settings import EngineSettings

    onnx_dir = tiny_build.artifacts / "onnx"
    source = onnx_dir / "model_int8_trt.onnx"
    if precision == "fp16":
        source = convert_to_fp16(onnx_dir / "model_fp32.onnx", tmp_path / "model_fp16.onnx")
    settings = EngineSettings(buckets=(16, 32), max_batch_size=8, opt_batch_size=4, workspace_mib=512)
    manifest = build_engine(source, tmp_path / precision, precision, settings)
    assert isinstance(manifest, EngineManifest) and manifest.buckets == (16, 32)
    runner = TrtRunner(tmp_path / precision / PLAN_FILE)
    rng = np.random.default_rng(0)
    feed = {"input_ids": rng.integers(1000, 5000, (11, 20)), "attention_mask": np.ones((11, 20), np.int64)}
    feed["casing_ids"] = np.zeros((11, 20), np.int64)
    got = runner(feed)  # 11 rows > max batch 8: split in two executions; length 20 -> bucket 32
    want = ort.InferenceSession(str(source)).run(None, feed)[0]
    assert got.shape == want.shape
    assert (got.argmax(-1) == want.argmax(-1)).mean() > agreement
    assert runner.throughput(16, 4, seconds=0.2)["sequences_per_s"] > 0
