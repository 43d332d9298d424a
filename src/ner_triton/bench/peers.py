"""The systems compared by ``make bench``, each measured on the same CoNLL-2003 test sentences.

* ``hf_pipeline_fp32`` - transformers' ``pipeline("token-classification", aggregation_strategy="first")``
  on the fine-tuned checkpoint, PyTorch FP32 (what a user would pick instead of a server).
* ``ort_<variant>_inprocess`` - tokenize + ONNX Runtime + decode in one process with the very functions the
  server uses, for every CPU variant (what a user without a server would run).
* ``ort_engine`` - ONNX Runtime alone on the served file: the texts tokenized beforehand (the server's own
  windows), batches cut from the windows sorted by sub-tokens and padded beforehand, and as many intra-op
  threads as the served ``ner`` instances have in all. Nothing but the engine is timed: the limit any server
  of this model on this machine can approach (every served peer is reported as a share of it).
* ``triton_ner_grpc`` / ``triton_ner_x8_grpc`` - the local server's one-step ``ner`` (the build's chosen CPU
  variant), 1 or 8 texts per request, from ``concurrency`` client threads.
* ``triton_ner_1x2_grpc`` - the same ``ner`` with one instance of two threads instead of two of one.
* ``triton_ensemble_grpc`` / ``triton_ensemble_x8_grpc`` - the three-step ensemble ``ner_<chosen>`` on the
  same server (python BERT step taking ragged batches).
* ``triton_equal_shapes_grpc`` - that ensemble with the BERT step run like Triton's C++ backends (onnxruntime,
  TensorRT): no ragged batches, the tokenizer pads to length buckets, only equal shapes batch.

In-process peers run batches back to back (a request = a batch). Latency percentiles are per request.
"""

from __future__ import annotations

import enum
import logging
import resource
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ner_triton.alignment import encode_texts, load_tokenizer, pad_batch
from ner_triton.bench.served_eval import model_counts, phase_ms
from ner_triton.client import NerClient
from ner_triton.decoding import decode_entities
from ner_triton.labels import LabelMap
from ner_triton.runtime.limits import Limits
from ner_triton.runtime.session import onnx_session
from ner_triton.runtime.steps import Preprocessor
from ner_triton.schema import ENSEMBLE, LABELS_FILE, MODEL_DIR
from ner_triton.variants import FP32, INT8, INT8_DYNAMIC, Variant

log = logging.getLogger(__name__)


class PeerKind(enum.Enum):
    HF_PIPELINE = "hf_pipeline"  # transformers' pipeline, PyTorch
    ORT_INPROCESS = "ort_inprocess"  # tokenize + ONNX Runtime + decode in this process
    ORT_ENGINE = "ort_engine"  # ONNX Runtime alone on pre-tokenized, pre-padded batches (the engine limit)
    TRITON_GRPC = "triton_grpc"  # a model of a real tritonserver, over gRPC


class ServerMode(enum.Enum):
    """Which local repository a gRPC peer's server runs."""

    RAGGED = "ragged"  # the committed python layout: BERT steps take ragged batches
    ONE_INSTANCE = "one_instance"  # the same with one instance of two ONNX Runtime threads per model (not 2 x 1)
    EQUAL_SHAPES = "equal_shapes"  # BERT steps like Triton's C++ backends (RepositorySettings.equal_shapes)


@dataclass(frozen=True)
class Peer:
    """One system of the bench: how it runs, which model variant (None: the build's served one), and for gRPC
    peers which Triton model, server mode and texts per request."""

    name: str
    kind: PeerKind
    variant: Variant | None
    fused: bool = False  # gRPC: the one-step ``ner`` (else the ensemble ``ner_<variant>``)
    mode: ServerMode = ServerMode.RAGGED
    texts_per_request: int = 1

    def resolve(self, served: Variant) -> Variant:
        return self.variant or served

    def model(self, served: Variant) -> str:
        """The Triton model a gRPC peer calls."""
        return ENSEMBLE if self.fused else self.resolve(served).ensemble_name(None)


PEERS: dict[str, Peer] = {
    p.name: p
    for p in (
        Peer("hf_pipeline_fp32", PeerKind.HF_PIPELINE, FP32),
        Peer("ort_fp32_inprocess", PeerKind.ORT_INPROCESS, FP32),
        Peer("ort_int8_inprocess", PeerKind.ORT_INPROCESS, INT8),
        Peer("ort_int8_dynamic_inprocess", PeerKind.ORT_INPROCESS, INT8_DYNAMIC),
        Peer("ort_engine", PeerKind.ORT_ENGINE, None),
        Peer("triton_ner_grpc", PeerKind.TRITON_GRPC, None, fused=True),
        Peer("triton_ner_x8_grpc", PeerKind.TRITON_GRPC, None, fused=True, texts_per_request=8),
        Peer("triton_ner_1x2_grpc", PeerKind.TRITON_GRPC, None, fused=True, mode=ServerMode.ONE_INSTANCE),
        Peer("triton_ensemble_grpc", PeerKind.TRITON_GRPC, None),
        Peer("triton_ensemble_x8_grpc", PeerKind.TRITON_GRPC, None, texts_per_request=8),
        Peer("triton_equal_shapes_grpc", PeerKind.TRITON_GRPC, None, mode=ServerMode.EQUAL_SHAPES),
    )
}
# The in-process peer that runs a variant's file (the reference of the served peers' goals).
INPROCESS_OF: dict[str, str] = {
    p.variant.key: name for name, p in PEERS.items() if p.kind is PeerKind.ORT_INPROCESS and p.variant
}


@dataclass(frozen=True)
class Run:
    """One measurement: a peer at one batch size (in-process) or one concurrency (server)."""

    batch_size: int
    concurrency: int
    sentences: int
    seconds: float
    throughput_sps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    client_cpu_pct: float
    triton: dict[str, Any] | None = None
    steal_pct: float | None = None  # CPU time the hypervisor gave to other guests during the run (/proc/stat)

    @property
    def client_cpu_s(self) -> float:
        """CPU seconds this process (the load generator, for gRPC peers) used during the run."""
        return round(self.client_cpu_pct * self.seconds / 100, 3)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "client_cpu_s": self.client_cpu_s}


def host_cpu_times() -> list[int] | None:
    """The host's aggregate CPU times (``cpu`` line of /proc/stat, in ticks), None where there is none."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    return [int(x) for x in fields[1:]] if fields and fields[0] == "cpu" else None


def steal_pct(before: list[int] | None, after: list[int] | None) -> float | None:
    """Steal time between two :func:`host_cpu_times` readings, in % of all CPU time (None: not known)."""
    if before is None or after is None or len(before) < 8 or len(after) < 8:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already in user/nice
    total = sum(after[:8]) - sum(before[:8])
    return round(100 * (after[7] - before[7]) / total, 2) if total > 0 else None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _ms(latencies: Sequence[float]) -> tuple[float, ...]:
    """Seconds to milliseconds."""
    return tuple(t * 1000.0 for t in latencies)


def _percentiles(ms: Sequence[float]) -> tuple[float, float, float]:
    p50, p95, p99 = (round(float(np.percentile(ms, q)), 2) for q in (50, 95, 99))
    return p50, p95, p99


def run_batches(fn: Callable[[list[str]], object], texts: Sequence[str], batch_size: int, warmup: int = 2) -> Run:
    """Call ``fn`` on batches of ``texts``; each call is one request.

    Batches of more than one text are cut from the texts sorted by length, as a careful offline user
    would (padding a random mix to its longest wastes most of the compute on a CPU).
    """
    ordered = sorted(texts, key=len) if batch_size > 1 else list(texts)
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    for batch in batches[:warmup]:
        fn(batch)
    latencies = []
    host0, cpu0, t0 = host_cpu_times(), _cpu_seconds(), time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        fn(batch)
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    return Run(batch_size, 1, len(texts), round(seconds, 3), round(len(texts) / seconds, 1),
               *_percentiles(_ms(latencies)), round(100 * cpu / seconds, 1),
               steal_pct=steal_pct(host0, host_cpu_times()))  # fmt: skip


class InProcessOrt:
    """Tokenize + ONNX Runtime + decode, exactly the server's steps without the server."""

    def __init__(self, artifacts: Path, onnx_file: Path, threads: int) -> None:
        self.tokenizer = load_tokenizer(str(artifacts / MODEL_DIR))
        self.labels = LabelMap.load(artifacts / MODEL_DIR / LABELS_FILE)
        self.session = onnx_session(onnx_file, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, texts: list[str]) -> list[list[Any]]:
        encodings = encode_texts(self.tokenizer, texts, 128)
        batch = pad_batch(encodings)
        logits = self.session.run(None, {n: batch[n] for n in self.inputs})[0]
        return [
            decode_entities(t, logits[i, : len(e)], e.offsets, e.word_ids, self.labels)
            for i, (t, e) in enumerate(zip(texts, encodings, strict=True))
        ]


class OrtEngine:
    """ONNX Runtime alone on the served file: the windows the server would make, tokenized beforehand."""

    def __init__(self, artifacts: Path, onnx_file: Path, threads: int, limits: Limits | None = None) -> None:
        self.pre = Preprocessor(artifacts / MODEL_DIR, limits or Limits())
        self.session = onnx_session(onnx_file, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def batches(self, texts: Sequence[str], batch_size: int) -> list[dict[str, np.ndarray]]:
        """Every window of ``texts``, sorted by sub-tokens, in batches of ``batch_size`` padded to their longest."""
        # one text at a time: the request budgets (Limits) hold per request, not for the whole sample
        windows = [w.encoding for t in texts for w in self.pre.windows([t])[0]]
        windows.sort(key=len)
        out = []
        for a in range(0, len(windows), batch_size):
            part = windows[a : a + batch_size]
            out.append({n: v for n, v in pad_batch(part).items() if n in self.inputs})
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, batch)[0]  # type: ignore[no-any-return]


def run_engine(engine: OrtEngine, texts: Sequence[str], batch_size: int, warmup: int = 2) -> Run:
    """:class:`OrtEngine` on the windows of ``texts`` in batches of ``batch_size``; only the runs are timed (a
    request = one batch of windows; throughput counts texts, a text of several windows counts once)."""
    batches = engine.batches(texts, batch_size)
    for batch in batches[:warmup]:
        engine(batch)
    latencies = []
    host0, cpu0, t0 = host_cpu_times(), _cpu_seconds(), time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        engine(batch)
        latencies.append(time.perf_counter() - t)
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    return Run(batch_size, 1, len(texts), round(seconds, 3), round(len(texts) / seconds, 1),
               *_percentiles(_ms(latencies)), round(100 * cpu / seconds, 1),
               steal_pct=steal_pct(host0, host_cpu_times()))  # fmt: skip


class HfPipeline:
    """transformers' token-classification pipeline on the fine-tuned checkpoint (PyTorch FP32).

    The pipeline loads the plain Hugging Face model, so it runs without our casing embedding: it
    computes the same encoder, but its predictions are not our model's (it is a speed peer).
    """

    def __init__(self, artifacts: Path, threads: int, batch_size: int) -> None:
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

        torch.set_num_threads(threads)
        model_dir = str(artifacts / MODEL_DIR)
        self.pipe = pipeline(
            "token-classification",
            model=AutoModelForTokenClassification.from_pretrained(model_dir),
            tokenizer=AutoTokenizer.from_pretrained(model_dir),
            aggregation_strategy="first",
            device=-1,
        )
        self.batch_size = batch_size

    def __call__(self, texts: list[str]) -> object:
        return self.pipe(texts, batch_size=self.batch_size)


def run_grpc(
    url: str,
    model: str,
    batched: str,
    texts: Sequence[str],
    concurrency: int,
    texts_per_request: int = 1,
    models: Sequence[str] = (),
) -> Run:
    """``concurrency`` threads each sending ``texts_per_request`` texts per request until ``texts`` are done.

    ``batched`` is the model whose batches are reported (the BERT step, or ``ner`` itself); ``models`` are
    every model the request passes through, whose per-phase times are reported too (where the time goes)."""

    local = threading.local()
    latencies: list[float] = []
    requests = [list(texts[i : i + texts_per_request]) for i in range(0, len(texts), texts_per_request)]

    def one(part: list[str]) -> None:
        if not hasattr(local, "client"):
            local.client = NerClient(url, model, timeout_s=120)
        t = time.perf_counter()
        local.client.extract(part)
        latencies.append(time.perf_counter() - t)

    watched = list(dict.fromkeys([batched, *models]))
    with NerClient(url, model) as admin, ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, requests[: 2 * concurrency]))  # warm-up: every thread has its channel
        latencies.clear()
        before = {m: model_counts(admin, m) for m in watched}
        host0, cpu0, t0 = host_cpu_times(), _cpu_seconds(), time.perf_counter()
        list(pool.map(one, requests))
        seconds = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
        host1 = host_cpu_times()
        after = {m: model_counts(admin, m) for m in watched}
    phases = {m: phase_ms(before[m], after[m]) for m in watched}
    main = phases[batched]
    triton = {
        "bert_avg_batch_size": main["avg_batch_size"],
        "bert_queue_ms_per_request": main["queue_ms"],
        "bert_compute_ms_per_batch": round(
            main["compute_input_ms"] + main["compute_infer_ms"] + main["compute_output_ms"], 3
        ),
        "models": phases,
    }
    ms = _ms(latencies)
    return Run(texts_per_request, concurrency, len(texts), round(seconds, 3), round(len(texts) / seconds, 1),
               *_percentiles(ms), round(100 * cpu / seconds, 1), triton, steal_pct(host0, host1))  # fmt: skip
