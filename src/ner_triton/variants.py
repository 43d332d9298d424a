"""The variant registry: every form of the model the build writes, scores and serves, looked up by key.

A :class:`Variant` joins the names one model form has across the project - its ONNX file in
``artifacts/onnx``, its key in ``report.json``, its Triton model and ensemble names, the platform that
runs it, and whether the build's accuracy gate covers it - so no module re-derives one name from
another. :class:`Layout` is the typed choice of model repository (where the BERT step runs).

    key            report key          ONNX file                 BERT step / ensemble                    gated
    fp32           onnx_fp32           model_fp32.onnx           ner_bert_fp32 / ner_fp32                reference
    int8           onnx_int8           model_int8.onnx           ner_bert_int8 / ner_int8                when served
    int8_dynamic   onnx_int8_dynamic   model_int8_dynamic.onnx   ner_bert_int8_dynamic / ner_int8_dynamic  when served
    trt            onnx_int8_trt       model_int8_trt.onnx       ner_bert_trt / ner (GPU layout)         by ner-engine

``ner`` itself serves the build's chosen CPU variant (:mod:`ner_triton.pipeline.serve`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from ner_triton.errors import ConfigError
from ner_triton.schema import BERT_PREFIX, ENSEMBLE, ONNX_MODEL_FILE, PLAN_MODEL_FILE, ROUTE_PREFIX

SERVED_FILES = (ONNX_MODEL_FILE, PLAN_MODEL_FILE)


class Layout(enum.Enum):
    """Where the BERT step runs: each layout is a model repository of its own."""

    PYTHON = "python"  # the local CPU server: a python-backend model running ONNX Runtime (ragged batches)
    ONNXRUNTIME = "onnxruntime"  # NGC container, CPU: Triton's onnxruntime backend
    TENSORRT = "tensorrt"  # NGC container, GPU: a TensorRT INT8 engine, one profile per length bucket

    @property
    def directory(self) -> Path:
        """The default repository directory of this layout (each has its own, so none overwrites another)."""
        return {
            Layout.PYTHON: Path("model_repository"),
            Layout.ONNXRUNTIME: Path("model_repository_ngc"),
            Layout.TENSORRT: Path("model_repository_gpu"),
        }[self]

    @classmethod
    def parse(cls, value: str | Layout) -> Layout:
        if isinstance(value, Layout):
            return value
        try:
            return cls(value)
        except ValueError:
            raise ConfigError(f"layout {value!r} is not one of {[m.value for m in cls]}.") from None


@dataclass(frozen=True)
class Variant:
    """One model form: its file, report key, Triton names and platform."""

    key: str
    report_key: str
    onnx_file: str
    description: str
    platform: str = "onnxruntime_onnx"  # on the python layout the BERT step is a python-backend model
    gated: bool = False  # the build fails when this variant loses more F1 than the gate allows
    reference: bool = False  # the variant others are compared with
    layouts: tuple[Layout, ...] = (Layout.PYTHON, Layout.ONNXRUNTIME)

    @property
    def triton_name(self) -> str:
        return BERT_PREFIX + self.key

    @property
    def router_name(self) -> str:
        """The bucket router in front of this variant's BERT step in the equal-shape layouts."""
        return ROUTE_PREFIX + self.key

    @property
    def from_engine(self) -> bool:
        """Served from an engine built on the GPU host (``ner-engine``), not from a build's ONNX file."""
        return self.platform == "tensorrt_plan"

    @property
    def served_file(self) -> str:
        """The file name Triton loads from the version directory."""
        return PLAN_MODEL_FILE if self.platform == "tensorrt_plan" else ONNX_MODEL_FILE

    def ensemble_name(self, default: Variant | None) -> str:
        """``ner`` for the repository's default variant, ``ner_<key>`` for the others (all, without a default)."""
        return ENSEMBLE if default is not None and self.key == default.key else f"{ENSEMBLE}_{self.key}"


FP32 = Variant("fp32", "onnx_fp32", "model_fp32.onnx", "FP32 ONNX export", reference=True)
INT8 = Variant(
    "int8", "onnx_int8", "model_int8.onnx", "static INT8 QDQ (uint8 activations, per-channel int8 weights)", gated=True
)
INT8_DYNAMIC = Variant(
    "int8_dynamic", "onnx_int8_dynamic", "model_int8_dynamic.onnx", "ONNX Runtime dynamic INT8", gated=True
)
TRT = Variant(
    "trt",
    "onnx_int8_trt",
    "model_int8_trt.onnx",
    "TensorRT INT8 form (symmetric QDQ, FP16 float parts); served as a TensorRT engine",
    platform="tensorrt_plan",
    layouts=(Layout.TENSORRT,),
)

VARIANTS: dict[str, Variant] = {v.key: v for v in (FP32, INT8, INT8_DYNAMIC, TRT)}
REFERENCE = FP32
# The torch model is scored beside the ONNX variants but has no file of its own here.
TORCH_REPORT_KEY = "torch_fp32"
# The FP16 graph of the GPU check (not a served variant).
ONNX_FP16_FILE = "model_fp16.onnx"


def get(key: str) -> Variant:
    """The variant ``key``; a :class:`ConfigError` naming the known keys otherwise."""
    try:
        return VARIANTS[key]
    except KeyError:
        raise ConfigError(f"unknown model variant {key!r}: use one of {sorted(VARIANTS)}.") from None


def gated() -> tuple[Variant, ...]:
    """The variants the build's accuracy gate covers (the INT8 forms a CPU deployment serves)."""
    return tuple(v for v in VARIANTS.values() if v.gated)
