"""The FP32 ONNX graph in half precision: the source of the FP16 comparison engine.

TensorRT's strongly typed networks take their precision from the graph (the FP16 builder flag is
deprecated, and gone in TensorRT 11), so the FP16 engine is built from an FP16 graph. Inputs and
outputs keep their types (int64 ids in, FP32 logits out); Softmax and explicit reductions stay
FP32 against overflow. LayerNormalization runs in FP16 (keeping it FP32 leaves its weights half,
which ONNX Runtime rejects); logits match FP32 within 5e-3 on the default model (ONNX Runtime, CPU).
"""

from __future__ import annotations

import logging
from pathlib import Path

import onnx

log = logging.getLogger(__name__)

KEEP_FP32 = ("Softmax", "ReduceMean", "Pow", "Sqrt", "Erf")


def convert_to_fp16(fp32_path: Path, output: Path) -> Path:
    """Write the FP16 version of ``fp32_path`` to ``output``; returns it."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(fp32_path))
    half = convert_float_to_float16(
        model, keep_io_types=True, op_block_list=sorted({*DEFAULT_OP_BLOCK_LIST, *KEEP_FP32}), disable_shape_infer=True
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, str(output))
    log.info("FP16 graph: %s (%.1f MB)", output, output.stat().st_size / 1e6)
    return output
