"""Run a TensorRT engine: page-locked host buffers, one stream, ``execute_async_v3``.

CUDA comes through :mod:`ner_triton.gpu.cuda` (``cuda-python``, else ``pycuda``), in the device's primary
context - the one TensorRT uses. The runner checks the engine's I/O types when it loads it (int64 ids in,
FP32 logits out: what the build's ONNX files declare), pads each batch to its sequence bucket, selects that
bucket's optimization profile, splits batches larger than the engine's maximum, and returns FP32 logits. It
is a :data:`~ner_triton.pipeline.evaluate.Predictor`, so the same evaluation code that scores the ONNX models
scores the engines on CoNLL-2003.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ner_triton.errors import EngineError
from ner_triton.gpu.cuda import load_backend
from ner_triton.gpu.engine import import_tensorrt
from ner_triton.gpu.manifest import MANIFEST_FILE, EngineManifest, check_compatible
from ner_triton.schema import LOGITS
from ner_triton.settings import EngineSettings

log = logging.getLogger(__name__)

INPUT_DTYPE = np.dtype(np.int64)
OUTPUT_DTYPE = np.dtype(np.float32)


def check_io_dtypes(dtypes: Mapping[str, Any], inputs: Sequence[str], source: str = "engine") -> None:
    """Raise :class:`EngineError` unless every input in ``inputs`` is int64 and the logits output is FP32.

    ``dtypes`` maps each I/O tensor of the engine to its numpy dtype.
    """
    problems = [
        f"input {n!r} is {np.dtype(dtypes[n])}, not int64" for n in inputs if np.dtype(dtypes[n]) != INPUT_DTYPE
    ]
    if LOGITS not in dtypes:
        problems.append(f"it has no {LOGITS!r} output (I/O tensors: {sorted(dtypes)})")
    elif np.dtype(dtypes[LOGITS]) != OUTPUT_DTYPE:
        problems.append(f"output {LOGITS!r} is {np.dtype(dtypes[LOGITS])}, not float32")
    if problems:
        raise EngineError(
            f"{source} does not have the runner's I/O types: {'; '.join(problems)}. Build it with `ner-engine` from "
            "the ONNX files `make build` writes (int64 ids in, float32 logits out)."
        )


class TrtRunner:
    def __init__(self, plan_path: Path) -> None:
        trt = import_tensorrt()
        self.cuda = cuda = load_backend()
        self.manifest = EngineManifest.read(plan_path.parent / MANIFEST_FILE)
        check_compatible(self.manifest, trt.__version__, *cuda.device(), source=str(plan_path))
        self.settings = EngineSettings(buckets=self.manifest.buckets, max_batch_size=self.manifest.max_batch_size)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT could not load {plan_path}; rebuild it with `ner-engine`.")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.stream()
        self.stream_handle = cuda.stream_handle(self.stream)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        check_io_dtypes(
            {n: trt.nptype(self.engine.get_tensor_dtype(n)) for n in names}, self.inputs, source=str(plan_path)
        )
        self.num_labels = int(self.engine.get_tensor_shape(LOGITS)[-1])
        rows, length = self.settings.max_batch_size, self.settings.buckets[-1]
        self.host = {n: cuda.host_buffer(rows * length, INPUT_DTYPE) for n in self.inputs}
        self.device = {n: cuda.device_buffer(self.host[n].nbytes) for n in self.inputs}
        self.host_out = cuda.host_buffer(rows * length * self.num_labels, OUTPUT_DTYPE)
        self.device_out = cuda.device_buffer(self.host_out.nbytes)
        self.profile = -1
        log.info("engine %s loaded (CUDA through %s)", plan_path, cuda.name)

    def _run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """One execution; ``batch`` already padded to a bucket and within the batch limit."""
        cuda = self.cuda
        rows, length = batch[self.inputs[0]].shape
        profile = self.settings.bucket_for(length)
        if profile != self.profile:
            self.context.set_optimization_profile_async(profile, self.stream_handle)
            self.profile = profile
        for name in self.inputs:
            view = self.host[name][: rows * length]
            view[:] = batch[name].reshape(-1)
            cuda.to_device(self.device[name], view, self.stream)
            self.context.set_input_shape(name, (rows, length))
            self.context.set_tensor_address(name, self.device[name])
        self.context.set_tensor_address(LOGITS, self.device_out)
        if not self.context.execute_async_v3(self.stream_handle):
            raise EngineError(f"TensorRT execution failed for a [{rows}, {length}] batch; its log above says why.")
        out = self.host_out[: rows * length * self.num_labels]
        cuda.to_host(out, self.device_out, self.stream)
        cuda.synchronize(self.stream)
        return out.reshape(rows, length, self.num_labels).copy()

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Logits ``[rows, length, labels]`` of a padded ``[rows, length]`` batch of any size."""
        rows, length = batch[self.inputs[0]].shape
        bucket = self.settings.buckets[self.settings.bucket_for(length)]
        padded = {n: np.pad(batch[n].astype(np.int64), ((0, 0), (0, bucket - length))) for n in self.inputs}
        step = self.settings.max_batch_size
        parts = [self._run({n: a[i : i + step] for n, a in padded.items()}) for i in range(0, rows, step)]
        return np.concatenate(parts)[:, :length]

    def throughput(self, bucket: int, rows: int, seconds: float = 2.0, warmup: int = 5) -> dict[str, Any]:
        """Sequences/s and ms per batch of ``[rows, bucket]`` batches (ids do not change the time)."""
        rng = np.random.default_rng(0)
        batch = {n: np.ones((rows, bucket), np.int64) for n in self.inputs}
        batch[self.inputs[0]] = rng.integers(1000, 2000, (rows, bucket))
        for _ in range(warmup):
            self(batch)
        times: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < 10:
            t0 = time.perf_counter()
            self(batch)
            times.append(time.perf_counter() - t0)
        ms = np.array(times) * 1000
        return {
            "bucket": bucket,
            "batch": rows,
            "ms_p50": round(float(np.percentile(ms, 50)), 3),
            "ms_p99": round(float(np.percentile(ms, 99)), 3),
            "sequences_per_s": round(rows * len(times) / float(np.sum(times)), 1),
        }
