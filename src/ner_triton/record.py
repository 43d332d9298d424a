"""The build record: what a build measured and which variant ``ner`` serves, as one frozen :class:`BuildReport`.

It crosses every stage after the build: the build writes it (``artifacts/report.json``, :meth:`BuildReport.write`),
install reads the served choice and the gate (``repository.install``), the GPU export the TensorRT form's score
(``pipeline.gate.check_report``), served evaluation the served variant's in-process F1 (``bench.served_eval``) and
the markdown report everything (``pipeline.report``). Nothing else reads ``report.json``: every reader goes through
:meth:`BuildReport.load`, which refuses a file from an earlier release (no ``schema`` field, or another one) with
the fix (``make build``).

    report = BuildReport.load(artifacts / REPORT_JSON)
    report.served.variant, report.gate.passed, report.variants["onnx_int8"].f1
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ner_triton.errors import ModelLoadError
from ner_triton.signals import SignalBaseline

SCHEMA = 2  # report.json's "schema"; files without it (or with another) are from an earlier release


def _tuple(items: Any) -> tuple[str, ...]:
    return tuple(str(x) for x in items or ())


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class TypeScore:
    """Entity-level scores of one entity type (or micro-averaged)."""

    precision: float
    recall: float
    f1: float
    support: int

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TypeScore:
        return cls(float(d["precision"]), float(d["recall"]), float(d["f1"]), int(d["support"]))


@dataclass(frozen=True)
class LatencyScore:
    """In-process latency of tokenize + run for one batch size."""

    batch_size: int
    ms_per_batch_p50: float
    ms_per_batch_p95: float
    sentences_per_s: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyScore:
        return cls(int(d["batch_size"]), float(d["ms_per_batch_p50"]), float(d["ms_per_batch_p95"]),
                   float(d["sentences_per_s"]))  # fmt: skip


@dataclass(frozen=True)
class VariantScore:
    """One model form on the test split: scores, size, in-process latency per batch size (``batch_1``, ...)."""

    precision: float
    recall: float
    f1: float
    support: int
    sentences: int
    per_type: Mapping[str, TypeScore]
    size_mb: float
    latency: Mapping[str, LatencyScore]
    delta_f1_points: float  # against the reference (onnx_fp32)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VariantScore:
        return cls(
            precision=float(d["precision"]),
            recall=float(d["recall"]),
            f1=float(d["f1"]),
            support=int(d["support"]),
            sentences=int(d["sentences"]),
            per_type={k: TypeScore.from_dict(v) for k, v in d["per_type"].items()},
            size_mb=float(d["size_mb"]),
            latency={k: LatencyScore.from_dict(v) for k, v in d["latency"].items()},
            delta_f1_points=float(d["delta_f1_points"]),
        )


@dataclass(frozen=True)
class Candidate:
    """One variant the served choice was made among."""

    report_key: str
    f1: float
    delta_f1_points: float
    passed_gate: bool
    sentences_per_s: float | None  # the race's speed; None when it did not race
    # The 95% interval of the difference from FP32 (points) on the data the gate decided on; None: point estimate
    delta_low: float | None = None
    delta_high: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Candidate:
        speed = d.get("sentences_per_s")
        return cls(str(d["report_key"]), float(d["f1"]), float(d["delta_f1_points"]), bool(d["passed_gate"]),
                   None if speed is None else float(speed), _optional(d.get("delta_low")),
                   _optional(d.get("delta_high")))  # fmt: skip


@dataclass(frozen=True)
class Served:
    """Which CPU variant the one-step ``ner`` serves, and why (``pipeline.serve.choose``)."""

    variant: str | None  # variant key (e.g. int8_dynamic); None when no candidate passed
    report_key: str | None
    triton_model: str
    passed: bool
    reason: str
    max_f1_drop_points: float
    race: str
    candidates: Mapping[str, Candidate]
    failures: tuple[str, ...] = ()
    fallback: bool = False  # True: no INT8 form passed, so ner serves FP32 (REQUIRE_INT8=1 refuses that instead)
    decided_on: str = ""  # the held-out data the gate decided on, e.g. "valid+test (719 sentences)"
    # the served variant's quality signals on the test split (ner_triton.signals), exported by the server as gauges
    signals: SignalBaseline | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Served:
        return cls(
            variant=None if d["variant"] is None else str(d["variant"]),
            report_key=None if d["report_key"] is None else str(d["report_key"]),
            triton_model=str(d["triton_model"]),
            passed=bool(d["passed"]),
            reason=str(d["reason"]),
            max_f1_drop_points=float(d["max_f1_drop_points"]),
            race=str(d["race"]),
            candidates={k: Candidate.from_dict(v) for k, v in d["candidates"].items()},
            failures=_tuple(d.get("failures")),
            fallback=bool(d.get("fallback", False)),
            decided_on=str(d.get("decided_on", "")),
            signals=None if d.get("signals") is None else SignalBaseline.from_dict(d["signals"]),
        )

    def as_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True)
class GateVerdict:
    """The accuracy gate on the served variant (``not_served``: other variants that missed it, reported only)."""

    max_f1_drop_points: float
    reference: str
    served: str | None
    passed: bool
    failures: tuple[str, ...] = ()
    not_served: tuple[str, ...] = ()
    fallback: bool = False  # the FP32 fallback is served (no INT8 form passed)
    rule: str = ""  # the gate's rule in words

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GateVerdict:
        return cls(float(d["max_f1_drop_points"]), str(d["reference"]), d.get("served"), bool(d["passed"]),
                   _tuple(d.get("failures")), _tuple(d.get("not_served")), bool(d.get("fallback", False)),
                   str(d.get("rule", "")))  # fmt: skip


@dataclass(frozen=True)
class Quality:
    """The quality floor: the FP32 model against the dictionary baseline (``pipeline.baseline``)."""

    baseline_f1: float
    model_f1: float
    margin_points: float
    required_margin_points: float | None
    min_f1: float | None
    passed: bool
    failures: tuple[str, ...] = ()
    zero_f1_types: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Quality:
        need, min_f1 = d.get("required_margin_points"), d.get("min_f1")
        return cls(
            baseline_f1=float(d["baseline_f1"]),
            model_f1=float(d["model_f1"]),
            margin_points=float(d["margin_points"]),
            required_margin_points=None if need is None else float(need),
            min_f1=None if min_f1 is None else float(min_f1),
            passed=bool(d["passed"]),
            failures=_tuple(d.get("failures")),
            zero_f1_types=_tuple(d.get("zero_f1_types")),
        )


@dataclass(frozen=True)
class Baseline:
    """The dictionary baseline's scores (spans seen as entities in training, tagged wherever they occur)."""

    precision: float
    recall: float
    f1: float
    types_only_in_test: tuple[str, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)  # the rest of pipeline.baseline's figures

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Baseline:
        rest = {k: v for k, v in d.items() if k not in ("precision", "recall", "f1", "types_only_in_test")}
        return cls(float(d["precision"]), float(d["recall"]), float(d["f1"]), _tuple(d.get("types_only_in_test")),
                   rest)  # fmt: skip


@dataclass(frozen=True)
class Training:
    """What fine-tuning did (``pipeline.finetune``'s summary; ``details``: the rest of it, e.g. pruning)."""

    train_sentences: int
    valid_sentences: int
    epochs_run: int
    epochs_planned: int
    steps_run: int | None
    stop_reason: str | None
    best_epoch: int
    best_valid_f1: float
    train_seconds: float
    details: Mapping[str, Any] = field(default_factory=dict)

    NAMED = ("train_sentences", "valid_sentences", "epochs_run", "epochs_planned", "steps_run", "stop_reason",
             "best_epoch", "best_valid_f1", "train_seconds")  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Training:
        steps, stop = d.get("steps_run"), d.get("stop_reason")
        return cls(
            train_sentences=int(d["train_sentences"]),
            valid_sentences=int(d["valid_sentences"]),
            epochs_run=int(d["epochs_run"]),
            epochs_planned=int(d.get("epochs_planned", d["epochs_run"])),
            steps_run=None if steps is None else int(steps),
            stop_reason=None if stop is None else str(stop),
            best_epoch=int(d["best_epoch"]),
            best_valid_f1=float(d["best_valid_f1"]),
            train_seconds=float(d["train_seconds"]),
            details={k: v for k, v in d.items() if k not in cls.NAMED and k != "model"},
        )


@dataclass(frozen=True)
class Interval:
    """One variant's F1 and its difference from FP32 (points), each with its interval (``pipeline.bootstrap``)."""

    f1: float
    f1_low: float
    f1_high: float
    delta_points: float
    delta_low: float
    delta_high: float

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Interval:
        return cls(*(float(d[k]) for k in ("f1", "f1_low", "f1_high", "delta_points", "delta_low", "delta_high")))

    @property
    def half_width(self) -> float:
        """Half the width of the difference's interval (points)."""
        return (self.delta_high - self.delta_low) / 2


@dataclass(frozen=True)
class Uncertainty:
    """95% intervals of every variant's F1 and difference from FP32: on the test split, and on the held-out
    data the gate decides on (``heldout``: ``decided_on``, e.g. valid + test pooled)."""

    method: str
    resamples: int
    seed: int
    confidence: float
    tolerance_points: float
    decided_on: str
    test_sentences: int
    heldout_sentences: int
    test_entities: int
    heldout_entities: int
    seconds: float  # the bootstrap's own cost
    test: Mapping[str, Interval]
    heldout: Mapping[str, Interval]
    seconds_test: float | None = None  # the test split's bootstrap alone

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Uncertainty:
        return cls(
            method=str(d["method"]),
            resamples=int(d["resamples"]),
            seed=int(d["seed"]),
            confidence=float(d["confidence"]),
            tolerance_points=float(d["tolerance_points"]),
            decided_on=str(d["decided_on"]),
            test_sentences=int(d["test_sentences"]),
            heldout_sentences=int(d["heldout_sentences"]),
            test_entities=int(d["test_entities"]),
            heldout_entities=int(d["heldout_entities"]),
            seconds=float(d["seconds"]),
            test={k: Interval.from_dict(v) for k, v in d["test"].items()},
            heldout={k: Interval.from_dict(v) for k, v in d["heldout"].items()},
            seconds_test=_optional(d.get("seconds_test")),
        )


@dataclass(frozen=True)
class DocumentMode:
    """The test split scored both ways when the model was trained with document context (``CONTEXT``): each
    variant's F1 with every sentence alone (``sentence``, as ``variants``) and with each document's sentences sent
    as one text, windowed as the server serves it (``document``; the client's documents mode), with per-type F1;
    each mode's in-process cost per sentence."""

    context_tokens: int
    sentences_in_documents: int  # test sentences that have at least one neighbour
    sentence: Mapping[str, float]  # report key -> F1, sentence mode
    document: Mapping[str, float]  # report key -> F1, document mode
    document_per_type: Mapping[str, Mapping[str, float]]  # report key -> entity type -> F1, document mode
    ms_per_sentence: Mapping[str, float]  # "sentence" / "document" -> ms per sentence of the FP32 ONNX form

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DocumentMode:
        return cls(
            context_tokens=int(d["context_tokens"]),
            sentences_in_documents=int(d["sentences_in_documents"]),
            sentence={str(k): float(v) for k, v in d["sentence"].items()},
            document={str(k): float(v) for k, v in d["document"].items()},
            document_per_type={
                str(k): {str(t): float(f) for t, f in v.items()} for k, v in d["document_per_type"].items()
            },
            ms_per_sentence={str(k): float(v) for k, v in d["ms_per_sentence"].items()},
        )


@dataclass(frozen=True)
class BuildReport:
    """Everything one build measured and decided (``artifacts/report.json``)."""

    model: str
    data: str
    test_sentences: int
    training: Training
    variants: Mapping[str, VariantScore]  # report key (torch_fp32, onnx_fp32, onnx_int8, ...) -> scores
    served: Served
    gate: GateVerdict
    baseline: Baseline | None
    quality: Quality | None
    settings: Mapping[str, Any]  # BuildSettings.as_dict(): the inputs, for reproducing the build
    versions: Mapping[str, str]  # library -> version
    cpus: int | None
    threads: int
    platform: str
    build_seconds: float
    schema: int = SCHEMA
    uncertainty: Uncertainty | None = None  # None: a build before the intervals (the gate used point estimates)
    document_mode: DocumentMode | None = None  # None: trained without document context (CONTEXT=0)

    def f1(self, report_key: str) -> float:
        """The test F1 of one variant; names the variants this build has when it lacks ``report_key``."""
        if report_key not in self.variants:
            raise ModelLoadError(
                f"this build report has no variant {report_key!r} (it has {', '.join(self.variants)}): "
                "run `make build`."
            )
        return self.variants[report_key].f1

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (report.json): the same shape as the files it reads back."""
        out = _plain(self)
        training = out.pop("training")
        out["training"] = {**training.pop("details"), **training}
        if out["baseline"] is not None:
            base = out["baseline"]
            out["baseline"] = {**base.pop("details"), **base}
        out["machine"] = {"cpus": out.pop("cpus"), "threads": out.pop("threads"), "platform": out.pop("platform")}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "report.json") -> BuildReport:
        """Read the JSON form; a file from an earlier release (or not a build report) is refused with the fix."""
        if d.get("schema") != SCHEMA:
            found = "no schema field" if "schema" not in d else f"schema {d.get('schema')!r}"
            raise ModelLoadError(
                f"{source} is a build report from an earlier release ({found}; this release reads schema {SCHEMA}): "
                "run `make build` to rebuild it."
            )
        try:
            machine = d["machine"]
            return cls(
                model=str(d["model"]),
                data=str(d["data"]),
                test_sentences=int(d["test_sentences"]),
                training=Training.from_dict(d["training"]),
                variants={k: VariantScore.from_dict(v) for k, v in d["variants"].items()},
                served=Served.from_dict(d["served"]),
                gate=GateVerdict.from_dict(d["gate"]),
                baseline=None if d.get("baseline") is None else Baseline.from_dict(d["baseline"]),
                quality=None if d.get("quality") is None else Quality.from_dict(d["quality"]),
                settings=dict(d.get("settings") or {}),
                versions={str(k): str(v) for k, v in (d.get("versions") or {}).items()},
                cpus=None if machine.get("cpus") is None else int(machine["cpus"]),
                threads=int(machine["threads"]),
                platform=str(machine.get("platform", "")),
                build_seconds=float(d["build_seconds"]),
                uncertainty=None if d.get("uncertainty") is None else Uncertainty.from_dict(d["uncertainty"]),
                document_mode=None if d.get("document_mode") is None else DocumentMode.from_dict(d["document_mode"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelLoadError(f"{source} is not a complete build report ({exc!r}): run `make build`.") from exc

    @classmethod
    def load(cls, path: Path) -> BuildReport:
        """``report.json`` of a build; a missing file names the fix (``make build``)."""
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing: only a finished build has a report; run `make build`.")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{path} is not JSON ({exc}): run `make build`.") from exc
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path} is not a build report: run `make build`.")
        return cls.from_dict(data, str(path))

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        return path


def _plain(obj: Any) -> Any:
    """A dataclass as JSON-ready dicts and lists (tuples -> lists, mappings -> dicts)."""
    return json.loads(json.dumps(asdict(obj), default=list))
