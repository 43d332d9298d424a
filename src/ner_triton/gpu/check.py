"""``ner-gpu-check`` (scripts/gpu_check.sh): the GPU acceptance run, a few minutes on one GPU.

1. Builds the INT8 engine (from the symmetric QDQ ONNX) and the FP16 engine (from the FP32 graph in
   FP16), each with one optimization profile per bucket.
2. Scores both engines on the CoNLL-2003 test split with the same evaluation code as the ONNX models,
   next to ONNX Runtime on the ONNX FP32 and INT8 (TensorRT form) files, all truncated to the largest
   bucket.
3. Times every bucket x batch size on both engines (synthetic ids: the time does not depend on them).
4. With ``--triton-url``, drives ``ner_bert_trt`` on a running server with [batch, 128] requests from
   several client threads and compares its throughput with the raw engine's.

Writes ``gpu_check.json`` and prints a table and the goals (INT8 F1 within 0.5 points of FP32; INT8
>= 1.5 x FP16 at sequence 128, batch 128; Triton >= 85% of the raw engine).
"""

from __future__ import annotations

import argparse
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ner_triton.alignment import load_tokenizer
from ner_triton.cli import Command
from ner_triton.data import load_split
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
    length = settings.buckets[-1]
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
            for b in sorted({*map(int, args.batches.split(",")), settings.max_batch_size})
        ]
        for name, runner in runners.items()
    }

    def at(name: str, bucket: int, batch: int) -> float:
        return next(r["sequences_per_s"] for r in timing[name] if r["bucket"] == bucket and r["batch"] == batch)

    top = settings.max_batch_size  # always timed (added to --batches): the goals are read at [128, 128]
    result: dict[str, Any] = {
        "engines": {k: vars(v) for k, v in engines.items()},
        "test_f1": f1,
        "timing": timing,
        "goals": {
            "int8_f1_drop_points_vs_fp32": round((f1[FP32.report_key] - f1["engine_int8"]) * 100, 2),
            "int8_over_fp16_at_128x128": round(at("int8", length, top) / at("fp16", length, top), 3),
        },
    }
    if args.triton_url:
        served = triton_throughput(args.triton_url, TRT.triton_name, top, length, args.clients, 10.0)
        result["triton"] = served
        result["goals"]["triton_over_engine"] = round(served["sequences_per_s"] / at("int8", length, top), 3)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print("| engine | bucket | batch | ms p50 | seq/s |\n|---|---|---|---|---|")
    for name, rows in timing.items():
        for r in rows:
            print(f"| {name} | {r['bucket']} | {r['batch']} | {r['ms_p50']} | {r['sequences_per_s']} |")
    print("test F1:", json.dumps(f1))
    print("goals (want <= 0.5, >= 1.5, >= 0.85):", json.dumps(result["goals"]))
    return 0


main = Command("ner-gpu-check", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
