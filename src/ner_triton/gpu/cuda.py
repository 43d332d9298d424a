"""The few CUDA calls the engine runner needs, from ``cuda-python`` (wheels) or ``pycuda`` (built from source).

``cuda-python`` is the default: it installs from wheels on a host with only the NVIDIA driver, and its runtime
API works in the device's primary context - the one TensorRT's builder and runtime use - as TensorRT's own
samples do. ``pycuda`` is used when ``cuda-python`` is missing; it builds from source (nvcc, ``cuda.h``, a C++
compiler and the Python headers), and is attached to the primary context (``pycuda.autoprimaryctx``), not a
second context of its own (``pycuda.autoinit``).

:func:`load_backend` picks one and says how to install one when neither is there.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Protocol

import numpy as np

from ner_triton.errors import EngineError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install the GPU extra on a machine with an NVIDIA GPU and driver: pip install '.[gpu]' "
    "(TensorRT and cuda-python, both wheels), or run `docker compose run engine`, whose image has both"
)


class CudaBackend(Protocol):
    """Device identity, page-locked host buffers, device buffers, one stream and asynchronous copies."""

    name: str

    def device(self) -> tuple[str, str]:
        """(name, compute capability "major.minor") of device 0."""
        ...

    def stream(self) -> Any: ...

    def stream_handle(self, stream: Any) -> int: ...

    def host_buffer(self, count: int, dtype: Any) -> np.ndarray: ...

    def device_buffer(self, nbytes: int) -> int: ...

    def to_device(self, device: int, host: np.ndarray, stream: Any) -> None: ...

    def to_host(self, host: np.ndarray, device: int, stream: Any) -> None: ...

    def synchronize(self, stream: Any) -> None: ...


class CudaPython:
    """``cuda-python``'s runtime API (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""

    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
        self.cudart = cudart
        self._call(cudart.cudaSetDevice(0))  # the runtime API uses the device's primary context

    def _call(self, result: Any) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self.cudart.cudaError_t.cudaSuccess:
            name = self.cudart.cudaGetErrorName(err)[1]
            raise EngineError(
                f"CUDA call failed: {name.decode() if isinstance(name, bytes) else name}; check `nvidia-smi` "
                "and that the driver supports CUDA 12."
            )
        return values[0] if len(values) == 1 else values

    def device(self) -> tuple[str, str]:
        props = self._call(self.cudart.cudaGetDeviceProperties(0))
        name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        return name.rstrip("\x00").strip(), f"{props.major}.{props.minor}"

    def stream(self) -> Any:
        return self._call(self.cudart.cudaStreamCreate())

    def stream_handle(self, stream: Any) -> int:
        return int(stream)

    def host_buffer(self, count: int, dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        pointer = self._call(self.cudart.cudaMallocHost(count * dtype.itemsize))
        typed = ctypes.cast(pointer, ctypes.POINTER(np.ctypeslib.as_ctypes_type(dtype)))
        return np.ctypeslib.as_array(typed, (count,))

    def device_buffer(self, nbytes: int) -> int:
        return int(self._call(self.cudart.cudaMalloc(nbytes)))

    def to_device(self, device: int, host: np.ndarray, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self.cudart.cudaMemcpyAsync(device, host.ctypes.data, host.nbytes, kind, stream))

    def to_host(self, host: np.ndarray, device: int, stream: Any) -> None:
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self.cudart.cudaMemcpyAsync(host.ctypes.data, device, host.nbytes, kind, stream))

    def synchronize(self, stream: Any) -> None:
        self._call(self.cudart.cudaStreamSynchronize(stream))


class PyCuda:
    """``pycuda`` in the device's primary context (shared with TensorRT), not a context of its own."""

    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.autoprimaryctx  # noqa: F401  (retains device 0's primary context)
        import pycuda.driver as cuda

        self.cuda = cuda
        self._allocations: list[Any] = []  # pycuda frees an allocation when its object is collected

    def device(self) -> tuple[str, str]:
        device = self.cuda.Device(0)
        major, minor = device.compute_capability()
        return str(device.name()), f"{major}.{minor}"

    def stream(self) -> Any:
        return self.cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def host_buffer(self, count: int, dtype: Any) -> np.ndarray:
        return self.cuda.pagelocked_empty(count, np.dtype(dtype))  # type: ignore[no-any-return]

    def device_buffer(self, nbytes: int) -> int:
        allocation = self.cuda.mem_alloc(nbytes)
        self._allocations.append(allocation)
        return int(allocation)

    def to_device(self, device: int, host: np.ndarray, stream: Any) -> None:
        self.cuda.memcpy_htod_async(device, host, stream)

    def to_host(self, host: np.ndarray, device: int, stream: Any) -> None:
        self.cuda.memcpy_dtoh_async(host, device, stream)

    def synchronize(self, stream: Any) -> None:
        stream.synchronize()


BACKENDS: dict[str, type[CudaPython] | type[PyCuda]] = {"cuda-python": CudaPython, "pycuda": PyCuda}


def load_backend(prefer: str | None = None) -> CudaBackend:
    """``prefer`` (``cuda-python`` or ``pycuda``), else the first of them that imports; an :class:`EngineError`
    that says how to install one, or what is wrong with the device, otherwise."""
    if prefer is not None and prefer not in BACKENDS:
        raise EngineError(f"CUDA backend {prefer!r} is not one of {sorted(BACKENDS)}.")
    missing = []
    for name in [prefer] if prefer else list(BACKENDS):
        try:
            backend: CudaBackend = BACKENDS[name]()
        except ImportError as exc:
            missing.append(f"{name}: {exc}")
            continue
        except EngineError:
            raise
        except Exception as exc:  # pycuda raises its own error types when no device or driver is usable
            raise EngineError(
                f"no usable CUDA device through {name} ({exc}): check `nvidia-smi` and the driver."
            ) from exc
        log.info("CUDA through %s", backend.name)
        return backend
    raise EngineError(f"no CUDA Python binding is installed ({'; '.join(missing)}): {INSTALL_HINT}.")
