"""Which CPU variant the server serves: the fastest one on this machine among those that pass the gate.

The same static QDQ file scores differently on CPUs with and without AVX-512 VNNI (ONNX Runtime's u8s8
kernels can saturate without it), and the speed order of static and dynamic INT8 differs between CPU kinds
too, so the choice is measured where the build runs, never assumed:

1. every CPU INT8 form (``Variant.gated``) is scored on the held-out data and gated against FP32 on the
   interval of its difference (:func:`ner_triton.pipeline.gate.gate`);
2. the ones that pass race each other on the same length-sorted batches of test sentences, in alternating
   rounds (:func:`race`), so a noisy machine slows every candidate alike;
3. the fastest is served as ``ner`` (``SERVE=<key>`` forces one; FP32 is always within its own gate);
   when none passes, FP32 is served (``fallback``) unless ``REQUIRE_INT8=1``.

The decision, the figures behind it and the gate verdict on the served variant go into ``report.json``
(``served``); :mod:`ner_triton.repository.install` installs only what that record allows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ner_triton.alignment import encode_texts, pad_batch
from ner_triton.errors import ConfigError
from ner_triton.pipeline.evaluate import onnx_predictor
from ner_triton.pipeline.gate import gate
from ner_triton.variants import REFERENCE, VARIANTS, Layout, Variant, gated

log = logging.getLogger(__name__)

AUTO = "auto"


def race(
    onnx_paths: Mapping[str, Path],
    tokenizer: Any,
    texts: Sequence[str],
    threads: int,
    batch_size: int = 8,
    rounds: int = 5,
) -> dict[str, float]:
    """Sentences per second of each model (report key -> path) on the same length-sorted batches of ``texts``
    (tokenize + pad + run), the median of ``rounds`` alternating rounds."""
    ordered = sorted(texts, key=len)
    batches = [pad_batch(encode_texts(tokenizer, ordered[i : i + batch_size], 128))
               for i in range(0, len(ordered), batch_size)]  # fmt: skip
    predictors = {name: onnx_predictor(path, threads) for name, path in onnx_paths.items()}
    for run in predictors.values():  # warm-up
        for batch in batches[:3]:
            run(batch)
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for _ in range(rounds):
        for name, run in predictors.items():
            t0 = time.perf_counter()
            for batch in batches:
                run(batch)
            times[name].append(time.perf_counter() - t0)
    return {name: round(len(ordered) / float(np.median(t)), 1) for name, t in times.items()}


def candidates(forced: str = AUTO) -> tuple[Variant, ...]:
    """The variants the choice is made among: the CPU INT8 forms, or the one ``SERVE`` names."""
    if forced == AUTO:
        return tuple(v for v in gated() if Layout.PYTHON in v.layouts)
    variant = VARIANTS.get(forced)
    if variant is None or Layout.PYTHON not in variant.layouts:
        cpu = [k for k, v in VARIANTS.items() if Layout.PYTHON in v.layouts]
        raise ConfigError(f"SERVE={forced!r} is not a CPU variant: use auto or one of {cpu}.")
    return (variant,)


def choose(
    scores: Mapping[str, Mapping[str, Any]],
    speeds: Mapping[str, float],
    max_drop_points: float,
    forced: str = AUTO,
    intervals: Mapping[str, Mapping[str, float]] | None = None,
    decided_on: str = "",
    fallback: bool = False,
) -> dict[str, Any]:
    """The ``served`` record of the report: the fastest candidate that passes the gate, and why.

    ``scores`` are the report's variants (report key -> ``f1``), ``speeds`` the race's (report key -> sent/s),
    ``intervals`` the held-out differences the gate decides on (``decided_on``; see
    :func:`~ner_triton.pipeline.gate.gate`). When no candidate passes, ``fallback`` serves FP32 (``fallback``
    True in the record; not for a forced ``SERVE``); otherwise ``passed`` is False and ``variant`` None.
    ``failures`` says why each candidate failed.
    """
    table: dict[str, dict[str, Any]] = {}
    failures = []
    for variant in candidates(forced):
        if variant.report_key not in scores:
            raise ConfigError(f"{variant.report_key} was not scored by this build: it cannot be served.")
        verdict = gate(scores, max_drop_points, [] if variant.reference else [variant], intervals,
                       decided_on or "held-out data")  # fmt: skip
        failures += verdict["failures"]
        row = (intervals or {}).get(variant.report_key, {})
        table[variant.key] = {
            "report_key": variant.report_key,
            "f1": scores[variant.report_key]["f1"],
            "delta_f1_points": round((scores[variant.report_key]["f1"] - scores[REFERENCE.report_key]["f1"]) * 100, 2),
            "passed_gate": verdict["passed"],
            "sentences_per_s": speeds.get(variant.report_key),
            "delta_low": row.get("delta_low"),
            "delta_high": row.get("delta_high"),
        }
    passing = [k for k, row in table.items() if row["passed_gate"]]
    chosen = max(passing, key=lambda k: table[k]["sentences_per_s"] or 0.0, default=None)
    fell_back = chosen is None and fallback and forced == AUTO
    if fell_back:
        chosen = REFERENCE.key
        table[chosen] = {
            "report_key": REFERENCE.report_key,
            "f1": scores[REFERENCE.report_key]["f1"],
            "delta_f1_points": 0.0,
            "passed_gate": True,
            "sentences_per_s": speeds.get(REFERENCE.report_key),
            "delta_low": None,
            "delta_high": None,
        }
        reason = "FP32 fallback: no INT8 variant passed the accuracy gate (REQUIRE_INT8=1 fails the build instead)"
    elif chosen is None:
        reason = "no candidate passed the accuracy gate"
    elif forced != AUTO:
        reason = f"SERVE={forced}"
    else:
        reason = "fastest on this machine among the variants within the accuracy gate"
    record = {
        "variant": chosen,
        "report_key": None if chosen is None else table[chosen]["report_key"],
        "triton_model": "ner",
        "passed": chosen is not None,
        "reason": reason,
        "max_f1_drop_points": max_drop_points,
        "race": "tokenize + pad + ONNX Runtime, length-sorted batches of 8, median of alternating rounds",
        "candidates": table,
        "failures": failures,
        "fallback": fell_back,
        "decided_on": decided_on,
    }
    if chosen is not None:
        log.info("serving %s (%s): F1 %.4f (%+.2f), %s sent/s", chosen, reason, table[chosen]["f1"],
                 table[chosen]["delta_f1_points"], table[chosen]["sentences_per_s"])  # fmt: skip
    return record
