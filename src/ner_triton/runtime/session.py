"""The one way this project opens an ONNX Runtime session on the CPU (Triton's BERT step, evaluation, bench)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort


def onnx_session(path: Path, threads: int, spinning: bool = True) -> Any:
    """CPU session with ``threads`` intra-op threads; ``spinning=False`` stops idle threads from busy-waiting
    (needed when several sessions share the cores, as Triton instances do)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
