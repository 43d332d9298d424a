"""``ner-gpu-check`` (scripts/gpu_check.sh): the GPU acceptance run, a few minutes on one GPU.

0. Reads the INT8 speed bound from the TensorRT INT8 form's graph (:mod:`ner_triton.gpu.bound`: the share of
   multiply-adds in INT8 GEMMs) and prints it before any GPU work.
1. Builds the INT8 engine (from the symmetric QDQ ONNX) and the FP16 engine (from the FP32 graph in
   FP16), each with one optimization profile per bucket.
2. Scores both engines on the CoNLL-2003 test split with the same evaluation code as the ONNX models,
   next to ONNX Runtime on the ONNX FP32 and INT8 (TensorRT form) files, all truncated to the largest
   bucket.
3. Times every bucket x batch size on both engines (synthetic ids: the time does not depend on them).
4. With ``--triton-url``, drives ``ner_bert_trt`` on a running server with [batch, 128] requests from
   several client threads and compares its throughput with the raw engine's.

Writes ``gpu_check.json`` and prints a table and the three goals (:func:`goals`): INT8 engine F1 within 0.5
points of FP32; INT8 engine >= 85% of the speed bound over the FP16 engine at sequence 128, batch 128;
Triton >= 85% of the raw engine.
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ner_triton.alignment import load_tokenizer
from ner_triton.cli import Command
from ner_triton.data import load_split
from ner_triton.gpu.bound import SpeedBound, speed_bound
from ner_triton.gpu.engine import build_engine
from ner_triton.gpu.manifest import PLAN_FILE
from ner_triton.gpu.runner import TrtRunner
from ner_triton.labels import LabelMap
from ner_triton.pipeline.evaluate import Predictor, evaluate, onnx_predictor
from ner_triton.pipeline.fp16 import convert_to_fp16
from ner_triton.schema import LABELS_FILE, MODEL_DIR, ONNX_DIR
from ner_triton.settings import EngineSettings, data_source, default_data
from ner_triton.variants import FP32, ONNX_FP16_FILE, TRT

log = logging.getLogger(__name__)


def triton_throughput(url: str, model: str, rows: int, length: int, clients: int, seconds: float) -> dict[str, Any]:
    """Sequences/s of ``model`` on a running server, ``clients`` threads each sending [rows, length] batches."""
    import tritonclient.grpc as grpcclient

    ids = np.random.default_rng(0).integers(1000, 2000, (rows, length)).astype(np.int64)
    ones = np.ones_like(ids)
    feeds = {"input_ids": ids, "attention_mask": ones, "casing_ids": np.zeros_like(ids)}
    done: list[int] = []
    errors: list[str] = []
    stop = time.perf_counter() + seconds

    def worker() -> None:
        client = grpcclient.InferenceServerClient(url)
        meta = client.get_model_metadata(model)
        inputs = []
        for spec in meta.inputs:
            t = grpcclient.InferInput(spec.name, [rows, length], "INT64")
            t.set_data_from_numpy(feeds[spec.name])
            inputs.append(t)
        n = 0
        while time.perf_counter() < stop:
            try:
                client.infer(model, inputs)
                n += 1
            except Exception as exc:  # reported, not hidden: the ratio is then meaningless
                errors.append(str(exc))
                break
        done.append(n)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return {
        "clients": clients,
        "batch": rows,
        "bucket": length,
        "requests": sum(done),
        "errors": errors[:3],
        "sequences_per_s": round(sum(done) * rows / elapsed, 1),
    }


@dataclass(frozen=True)
class Goal:
    """One acceptance goal: its measured value (None: not measured in this run) against its target."""

    name: str
    value: float | None
    target: float
    higher_is_better: bool
    detail: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "not measured"
        met = self.value >= self.target if self.higher_is_better else self.value <= self.target
        return "met" if met else "MISSED"

    def line(self) -> str:
        want = (">= " if self.higher_is_better else "<= ") + f"{self.target:g}"
        value = "-" if self.value is None else f"{self.value:g}"
        return f"| {self.name} | {value} | {want} | {self.verdict} | {self.detail} |"


MAX_F1_DROP_POINTS = 0.5
SHARE_OF_BOUND = 0.85  # the INT8 engine's speed-up over FP16 must reach this share of the graph's bound
TRITON_SHARE_OF_ENGINE = 0.85


def goals(
    f1_drop_points: float | None, int8_over_fp16: float | None, bound: SpeedBound, triton_over_engine: float | None
) -> list[Goal]:
    """The three GPU goals; ``None`` for what this run did not measure."""
    floor = round(SHARE_OF_BOUND * bound.bound, 3)
    return [
        Goal("INT8 engine F1 drop vs ONNX FP32 (points)", f1_drop_points, MAX_F1_DROP_POINTS, False),
        Goal(
            f"INT8 / FP16 engine throughput at {bound.length}x{EngineSettings().max_batch_size}",
            int8_over_fp16,
            floor,
            True,
            f"{SHARE_OF_BOUND:.0%} of the bound {bound.bound:.3f} (INT8 share of multiply-adds {bound.int8_share:.1%})",
        ),
        Goal("Triton / raw INT8 engine throughput", triton_over_engine, TRITON_SHARE_OF_ENGINE, True),
    ]


def print_goals(rows: list[Goal]) -> None:
    print("| goal | measured | target | verdict | |\n|---|---|---|---|---|")
    for row in rows:
        print(row.line())


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--data", default=default_data())
    parser.add_argument("--output", type=Path, default=Path("artifacts/gpu"))
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per bucket x batch cell")
    parser.add_argument("--triton-url", help="gRPC address of a server serving the GPU repository")
    parser.add_argument("--clients", type=int, default=4)


def _run(args: argparse.Namespace) -> int:
    settings = EngineSettings()
    onnx_dir = args.artifacts / ONNX_DIR
    length, top = settings.buckets[-1], settings.max_batch_size  # the speed goal is read at [top, length]
    bound = speed_bound(onnx_dir / TRT.onnx_file, length)
    print(
        f"INT8 speed bound of {TRT.onnx_file} at {length} tokens: {bound.bound:.3f}x FP16 "
        f"({bound.int8_matmuls} INT8 / {bound.float_matmuls} float MatMuls, {bound.int8_share:.1%} of the "
        f"multiply-adds in INT8, INT8 GEMMs {bound.int8_rate:g}x FP16); goal >= {SHARE_OF_BOUND * bound.bound:.3f}"
    )
    print_goals(goals(None, None, bound, None))
    engines = {
        "int8": build_engine(onnx_dir / TRT.onnx_file, args.output / "int8", "int8", settings),
        "fp16": build_engine(
            convert_to_fp16(onnx_dir / FP32.onnx_file, args.output / ONNX_FP16_FILE),
            args.output / "fp16",
            "fp16",
            settings,
        ),
    }
    runners = {name: TrtRunner(args.output / name / PLAN_FILE) for name in engines}
    model_dir = args.artifacts / MODEL_DIR
    tokenizer, labels = load_tokenizer(str(model_dir)), LabelMap.load(model_dir / LABELS_FILE)
    test = load_split(data_source(args.data), "test")
    f1: dict[str, float] = {}
    predictors: dict[str, Predictor] = {
        FP32.report_key: onnx_predictor(onnx_dir / FP32.onnx_file, 8),
        TRT.report_key: onnx_predictor(onnx_dir / TRT.onnx_file, 8),
        **{f"engine_{k}": v for k, v in runners.items()},
    }
    for name, predictor in predictors.items():
        f1[name] = evaluate(predictor, test, tokenizer, labels, 64, max_length=length, desc=name).f1
        log.info("test F1 %-14s %.4f", name, f1[name])
    timing = {
        name: [
            runner.throughput(bucket, int(b), args.seconds)
            for bucket in settings.buckets
            for b in sorted({*map(int, args.batches.split(",")), top})
        ]
        for name, runner in runners.items()
    }

    def at(name: str, bucket: int, batch: int) -> float:
        return next(r["sequences_per_s"] for r in timing[name] if r["bucket"] == bucket and r["batch"] == batch)

    drop = round((f1[FP32.report_key] - f1["engine_int8"]) * 100, 2)
    ratio = round(at("int8", length, top) / at("fp16", length, top), 3)
    served: dict[str, Any] | None = None
    triton_ratio = None
    if args.triton_url:
        served = triton_throughput(args.triton_url, TRT.triton_name, top, length, args.clients, 10.0)
        triton_ratio = round(served["sequences_per_s"] / at("int8", length, top), 3)
    rows = goals(drop, ratio, bound, triton_ratio)
    result: dict[str, Any] = {
        "engines": {k: vars(v) for k, v in engines.items()},
        "test_f1": f1,
        "timing": timing,
        "speed_bound": bound.as_dict(),
        "goals": {g.name: {"value": g.value, "target": g.target, "verdict": g.verdict} for g in rows},
        **({"triton": served} if served else {}),
    }
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("| engine | bucket | batch | ms p50 | seq/s |\n|---|---|---|---|---|")
    for name, timed in timing.items():
        for r in timed:
            print(f"| {name} | {r['bucket']} | {r['batch']} | {r['ms_p50']} | {r['sequences_per_s']} |")
    print("test F1:", json.dumps(f1))
    print_goals(rows)
    return 0


main = Command("ner-gpu-check", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
