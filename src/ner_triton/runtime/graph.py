"""Facts read from an ONNX graph that the BERT step (and the TensorRT engine builder) need."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx


def lookup_table_rows(onnx_model: Path | Any, input_names: Sequence[str]) -> dict[str, int]:
    """Rows of the embedding table each id input indexes (``input_ids`` -> vocabulary size), read from
    the graph (a path or a loaded ``ModelProto``): a ``Gather`` on a constant table, or on the
    ``DequantizeLinear`` of one (INT8)."""

    model = onnx.load(str(onnx_model)) if isinstance(onnx_model, Path) else onnx_model
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and node.input[1] in input_names:
            table = node.input[0]
            if table not in dims and table in producer and producer[table].op_type == "DequantizeLinear":
                table = producer[table].input[0]
            if table in dims:
                out[node.input[1]] = dims[table][0]
    return out
