"""Run a TensorRT engine with pycuda: page-locked host buffers, one stream, ``execute_async_v3``.

The runner pads each batch to its sequence bucket, selects that bucket's optimization profile,
splits batches larger than the engine's maximum, and returns FP32 logits. It is a
:data:`~ner_triton.pipeline.evaluate.Predictor`, so the same evaluation code that scores the ONNX
models scores the engines on CoNLL-2003.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ner_triton.errors import EngineError
from ner_triton.gpu.engine import gpu_identity, import_tensorrt
from ner_triton.gpu.manifest import MANIFEST_FILE, EngineManifest, check_compatible
from ner_triton.schema import LOGITS
from ner_triton.settings import EngineSettings

log = logging.getLogger(__name__)


class TrtRunner:
    def __init__(self, plan_path: Path) -> None:
        trt = import_tensorrt()
        import pycuda.autoinit  # noqa: F401  (creates the CUDA context of device 0)
        import pycuda.driver as cuda

        self.cuda = cuda
        self.manifest = EngineManifest.read(plan_path.parent / MANIFEST_FILE)
        check_compatible(self.manifest, trt.__version__, *gpu_identity(), source=str(plan_path))
        self.settings = EngineSettings(buckets=self.manifest.buckets, max_batch_size=self.manifest.max_batch_size)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(plan_path.read_bytes())
        if self.engine is None:
            raise EngineError(f"TensorRT could not load {plan_path}; rebuild it with `ner-engine`.")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.num_labels = int(self.engine.get_tensor_shape(LOGITS)[-1])
        rows, length = self.settings.max_batch_size, self.settings.buckets[-1]
        self.host = {n: cuda.pagelocked_empty(rows * length, np.int64) for n in self.inputs}
        self.device = {n: cuda.mem_alloc(self.host[n].nbytes) for n in self.inputs}
        self.host_out = cuda.pagelocked_empty(rows * length * self.num_labels, np.float32)
        self.device_out = cuda.mem_alloc(self.host_out.nbytes)
        self.profile = -1

    def _run(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """One execution; ``batch`` already padded to a bucket and within the batch limit."""
        cuda = self.cuda
        rows, length = batch[self.inputs[0]].shape
        profile = self.settings.bucket_for(length)
        if profile != self.profile:
            self.context.set_optimization_profile_async(profile, self.stream.handle)
            self.profile = profile
        for name in self.inputs:
            view = self.host[name][: rows * length]
            view[:] = batch[name].reshape(-1)
            cuda.memcpy_htod_async(self.device[name], view, self.stream)
            self.context.set_input_shape(name, (rows, length))
            self.context.set_tensor_address(name, int(self.device[name]))
        self.context.set_tensor_address(LOGITS, int(self.device_out))
        if not self.context.execute_async_v3(self.stream.handle):
            raise EngineError(f"TensorRT execution failed for a [{rows}, {length}] batch; its log above says why.")
        out = self.host_out[: rows * length * self.num_labels]
        cuda.memcpy_dtoh_async(out, self.device_out, self.stream)
        self.stream.synchronize()
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
