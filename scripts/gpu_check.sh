#!/usr/bin/env bash
# GPU acceptance run (a few minutes on one GPU): builds the INT8 and FP16 TensorRT engines, scores them on
# CoNLL-2003 test next to ONNX Runtime, times every bucket x batch, and - when TRITON_URL is set - compares
# Triton serving of the engine with the raw engine. Writes ${OUTPUT:-artifacts/gpu}/gpu_check.json.
#
#   make build && scripts/gpu_check.sh                  # on the GPU host, after the CPU build
#   TRITON_URL=127.0.0.1:8001 scripts/gpu_check.sh     # also measure a server serving the GPU repository
# TensorRT is pinned to the release of the serving image (TRITON_TAG 24.10 = TensorRT 10.5): an engine only
# runs on the TensorRT that built it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: this check needs an NVIDIA GPU and driver" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
if ! "$PY" -c "import tensorrt, pycuda" 2>/dev/null; then
  echo "installing tensorrt and pycuda into $PY's environment" >&2
  "$PY" -m pip install -q 'tensorrt==10.5.*' 'pycuda>=2024.1'
fi
ARTIFACTS=${ARTIFACTS:-artifacts}
test -f "$ARTIFACTS/onnx/model_int8_trt.onnx" || { echo "error: $ARTIFACTS/onnx/model_int8_trt.onnx missing: run make build" >&2; exit 2; }
exec "$PY" -m ner_triton.gpu.check --artifacts "$ARTIFACTS" --output "${OUTPUT:-$ARTIFACTS/gpu}" \
  ${DATA:+--data "$DATA"} ${TRITON_URL:+--triton-url "$TRITON_URL"} "$@"
