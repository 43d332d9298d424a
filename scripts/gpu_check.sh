#!/usr/bin/env bash
# GPU acceptance run (a few minutes on one GPU): prints the INT8 speed bound read from the graph, builds the INT8
# and FP16 TensorRT engines, scores them on CoNLL-2003 test next to ONNX Runtime, times every bucket x batch, and
# - when TRITON_URL is set - compares Triton serving of the engine with the raw engine; prints the three goals
# (INT8 F1 within 0.5 points of FP32; INT8 >= 85% of the bound over FP16; Triton >= 85% of the engine).
# Writes ${OUTPUT:-artifacts/gpu}/gpu_check.json.
#
#   make build && scripts/gpu_check.sh                  # on the GPU host, after the CPU build
#   TRITON_URL=127.0.0.1:8001 scripts/gpu_check.sh     # also measure a server serving the GPU repository
# TensorRT comes from the `gpu` extra (pyproject.toml): pinned to the serving image's release (TRITON_TAG 24.10 =
# TensorRT 10.5.0), because an engine only runs on the TensorRT that built it; CUDA through cuda-python (wheels).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: this check needs an NVIDIA GPU and driver" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
ARTIFACTS=${ARTIFACTS:-artifacts}
test -f "$ARTIFACTS/onnx/model_int8_trt.onnx" || { echo "error: $ARTIFACTS/onnx/model_int8_trt.onnx missing: run make build" >&2; exit 2; }
if ! "$PY" -c "import tensorrt; from ner_triton.gpu.cuda import load_backend; load_backend()" 2>/dev/null; then
  echo "installing the gpu extra (TensorRT 10.5.0, cuda-python, numpy < 2) into $PY's environment" >&2
  "$PY" -m pip install -q -e '.[gpu]' || {
    echo "error: pip could not install the gpu extra. tensorrt-cu12-libs 10.5.0 is fetched from pypi.nvidia.com:" \
         "that index must be reachable (or run this check in the engine image: docker compose run engine)" >&2
    exit 2
  }
fi
exec "$PY" -m ner_triton.gpu.check --artifacts "$ARTIFACTS" --output "${OUTPUT:-$ARTIFACTS/gpu}" \
  ${DATA:+--data "$DATA"} ${TRITON_URL:+--triton-url "$TRITON_URL"} "$@"
