"""The one way this project opens an ONNX Runtime session on the CPU (Triton's BERT step, evaluation, bench)."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import onnxruntime as ort


def onnx_session(path: Path, threads: int, spinning: bool = True, spin_between_runs: bool = True) -> Any:
    """CPU session with ``threads`` intra-op threads; ``spinning=False`` stops idle threads from busy-waiting
    (needed when several sessions share the cores, as Triton instances do).

    ``spin_between_runs=False``: the threads spin only while a run is on and stop the moment it returns
    (``session.force_spinning_stop``). ONNX Runtime's default keeps them spinning after a run, waiting for the next
    one - right for a process that runs back to back, wrong in a server: between two requests the gRPC threads, the
    server and the client need the cores those threads spin on (measured: docs/serving.md, "threads_alone")."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif not spin_between_runs:
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def shrink_options() -> Any:
    """Run options that make ONNX Runtime's CPU arena free, after the run, the chunks the run added."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


# glibc's malloc_trim among the symbols already loaded in this process (no library search at import: the
# python-backend stub imports this module when a model loads); None where the C library has none.
_MALLOC_TRIM = getattr(ctypes.CDLL(None), "malloc_trim", None)


def trim_heap() -> None:
    """Give the C heap's free memory back to the system (glibc ``malloc_trim``; a no-op elsewhere)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
