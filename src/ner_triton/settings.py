"""Typed, frozen settings of the build, read from the environment the Makefile passes on."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ner_triton.data import HUB_SPLITS, SCHEMES, DataSource
from ner_triton.errors import ConfigError
from ner_triton.variants import VARIANTS, Layout

SHARED_DATA = Path("../shared/data/conll2003")


def default_data() -> str:
    """``../shared/data/conll2003`` when it exists (next to the checkout), otherwise the hub."""
    return str(SHARED_DATA) if SHARED_DATA.is_dir() else "hub"


@dataclass(frozen=True)
class TrainSettings:
    """Fine-tuning hyper-parameters."""

    epochs: int = 4  # at least this many epochs (early stopping may end sooner once min_steps are done)
    min_steps: int = 1000  # at least this many optimizer steps: small data sets get more epochs
    max_epochs: int = 40  # the cap on the epochs min_steps may add
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    max_length: int = 128
    patience: int = 2
    seed: int = 13
    max_train_sentences: int | None = None
    use_casing: bool = True
    # Document context (FLERT): sub-tokens of the neighbouring sentences read on each side of a training
    # sentence (0: off; only where the data marks documents), and the share of sentences read alone anyway.
    context_tokens: int = 0
    alone_share: float = 0.25
    # The fields the user set (from_env: EPOCHS -> "epochs", MIN_STEPS -> "min_steps"): an explicit EPOCHS
    # without an explicit MIN_STEPS is the plan itself (pipeline.finetune.plan_epochs).
    explicit: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _positive(self, "epochs", "batch_size", "max_length", "patience", "max_epochs")
        if self.min_steps < 0:
            raise ConfigError(f"MIN_STEPS={self.min_steps} must be >= 0 (0: epochs alone decide).")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"learning_rate={self.learning_rate} must be in (0, 1); try 1e-4.")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio={self.warmup_ratio} must be in [0, 1).")
        if not 0 <= self.context_tokens <= self.max_length:
            raise ConfigError(
                f"CONTEXT={self.context_tokens} must be in [0, max_length={self.max_length}] (sub-tokens of document "
                "context per side; 0 turns it off, 64 is FLERT's choice)."
            )
        if not 0 <= self.alone_share <= 1:
            raise ConfigError(f"alone_share={self.alone_share} must be in [0, 1] (share of sentences read alone).")
        if self.max_train_sentences is not None and self.max_train_sentences <= 0:
            raise ConfigError(
                f"MAX_TRAIN_SENTENCES={self.max_train_sentences} must be a positive integer (or empty for all)."
            )


@dataclass(frozen=True)
class QuantSettings:
    """INT8 quantization and its accuracy gate."""

    calibration_sentences: int = 512
    calibration_length: int = 64
    # The served CPU variant may lose at most this much test F1 against FP32 (points).
    max_f1_drop_points: float = 0.5
    # Which CPU variant ``ner`` serves: "auto" (the fastest INT8 form within the gate, measured on this machine;
    # pipeline.serve) or a variant key (int8, int8_dynamic, fp32).
    serve: str = "auto"
    # Extra MatMul nodes kept in float because they are the most sensitive (names or substrings).
    keep_float: tuple[str, ...] = ()
    # SmoothQuant alpha (e.g. 0.5) applied before static quantization; None = off (it did not help
    # all-MiniLM-L6-v2 on CoNLL-2003: see docs/int8.md).
    smooth_alpha: float | None = None
    # When no INT8 form passes the gate the build serves FP32 and exits 0; REQUIRE_INT8=1 makes that a failure.
    require_int8: bool = False

    def __post_init__(self) -> None:
        _positive(self, "calibration_sentences", "calibration_length")
        if self.smooth_alpha is not None and not 0 < self.smooth_alpha < 1:
            raise ConfigError(f"smooth_alpha={self.smooth_alpha} must be in (0, 1), e.g. 0.5.")
        if self.max_f1_drop_points < 0:
            raise ConfigError(f"max_f1_drop_points={self.max_f1_drop_points} must be >= 0.")
        cpu = ("auto", *(k for k, v in VARIANTS.items() if Layout.PYTHON in v.layouts))
        if self.serve not in cpu:
            raise ConfigError(f"SERVE={self.serve!r} is not one of {', '.join(cpu)}.")


@dataclass(frozen=True)
class QualitySettings:
    """The quality floor: the FP32 model must clearly beat a dictionary baseline on the same data.

    The baseline is the CoNLL-2003 shared task's own: tag only the token spans seen as entities in the
    training split (``pipeline.baseline``). A fixed absolute floor would refuse good models on hard data and
    let useless ones through on easy data; the baseline moves with the data.
    """

    baseline_margin_points: float | None = 5.0  # FP32 test F1 must exceed the baseline's by this; None: off
    min_f1: float | None = None  # and reach this absolute test F1, when set (MIN_F1)

    def __post_init__(self) -> None:
        margin = self.baseline_margin_points
        if margin is not None and not (math.isfinite(margin) and margin >= 0):
            raise ConfigError(f"BASELINE_MARGIN={margin} must be a number of F1 points >= 0, or off.")
        if self.min_f1 is not None and not 0 <= self.min_f1 <= 1:
            raise ConfigError(f"MIN_F1={self.min_f1} must be an F1 in [0, 1], e.g. 0.6.")


@dataclass(frozen=True)
class EngineSettings:
    """TensorRT engines: one optimization profile per sequence-length bucket, up to ``max_batch_size``.

    The tokenizer of the GPU repository pads every request to its bucket, so requests of one bucket
    have equal shapes and Triton batches them; each profile is tuned for ``opt_batch_size`` rows.
    """

    buckets: tuple[int, ...] = (16, 32, 64, 128)
    max_batch_size: int = 128
    opt_batch_size: int = 32
    workspace_mib: int = 4096
    optimization_level: int = 3

    def __post_init__(self) -> None:
        _positive(self, "max_batch_size", "opt_batch_size", "workspace_mib")
        if not self.buckets or list(self.buckets) != sorted(set(self.buckets)) or self.buckets[0] <= 2:
            raise ConfigError(f"buckets={self.buckets} must be distinct ascending lengths > 2, e.g. 16,32,64,128.")
        if not 0 <= self.optimization_level <= 5:
            raise ConfigError(f"optimization_level={self.optimization_level} must be in 0..5 (TensorRT's range).")

    def profiles(self) -> list[dict[str, Any]]:
        """Per bucket: the [batch, sequence] shapes (min, opt, max) its optimization profile accepts
        (the opt batch is ``opt_batch_size``, or ``max_batch_size`` when that is smaller)."""
        out, low = [], 1
        opt = min(self.opt_batch_size, self.max_batch_size)
        for bucket in self.buckets:
            out.append(
                {
                    "bucket": bucket,
                    "min": [1, low],
                    "opt": [opt, bucket],
                    "max": [self.max_batch_size, bucket],
                }
            )
            low = bucket + 1
        return out

    def bucket_for(self, length: int) -> int:
        """Index of the profile (bucket) that holds sequences of ``length`` tokens."""
        for i, bucket in enumerate(self.buckets):
            if length <= bucket:
                return i
        raise ConfigError(
            f"sequence length {length} exceeds the largest bucket {self.buckets[-1]}: rebuild the "
            "engine with a larger bucket or lower the tokenizer's max_length."
        )


@dataclass(frozen=True)
class PruneSettings:
    """What to remove and how to recover."""

    layers: int = 0  # encoder layers to remove
    heads: float = 0.0  # fraction of the remaining attention heads to remove
    epochs: int = 1  # recovery fine-tune epochs
    distill: float = 0.5  # weight of the distillation loss (0: plain fine-tune)
    temperature: float = 2.0
    importance_batches: int = 32

    def __post_init__(self) -> None:
        if self.layers < 0 or not 0.0 <= self.heads < 1.0:
            raise ConfigError(f"PRUNE: layers={self.layers} must be >= 0 and heads={self.heads} in [0, 1).")
        if self.epochs < 1 or not 0.0 <= self.distill <= 1.0 or self.temperature <= 0:
            raise ConfigError("PRUNE: epochs >= 1, distill in [0, 1] and temperature > 0 are required.")

    @property
    def active(self) -> bool:
        return self.layers > 0 or self.heads > 0

    @classmethod
    def parse(cls, spec: str) -> PruneSettings:
        """``"layers=2,heads=0.25,epochs=1,distill=0.5"``; empty or ``none`` = no pruning."""
        spec = spec.strip()
        if not spec or spec.lower() in {"none", "0", "off"}:
            return cls()
        kinds = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for part in spec.split(","):
            key, _, raw = part.partition("=")
            key = key.strip()
            if key not in kinds or not raw:
                raise ConfigError(f"PRUNE={spec!r}: {part!r} is not key=value with a key in {sorted(kinds)}.")
            try:
                values[key] = int(raw) if kinds[key] in (int, "int") else float(raw)
            except ValueError as exc:
                raise ConfigError(f"PRUNE={spec!r}: {raw!r} is not a number.") from exc
        return cls(**values)

    def describe(self) -> str:
        return f"layers={self.layers},heads={self.heads},epochs={self.epochs},distill={self.distill}"


@dataclass(frozen=True)
class BuildSettings:
    """Everything ``make build`` needs: where the model and data are, where to write, and how."""

    model: str = ""
    data: str = field(default_factory=default_data)
    scheme: str = "auto"  # tagging scheme of the data files: auto (detected), iob1, iob2, bioes, bilou, io
    hub_tokens: str = "tokens"  # DATA=hub:<name>: the token and tag columns, and the split names
    hub_tags: str = "ner_tags"
    hub_splits: tuple[tuple[str, str], ...] = tuple(HUB_SPLITS.items())
    artifacts: Path = Path("artifacts")
    repository: Path | None = Path("model_repository")
    # Skip fine-tuning (and pruning) when ``artifacts/model`` already holds a finished one (REUSE_MODEL=1):
    # re-export, re-quantize, re-evaluate and re-choose the served variant without retraining.
    reuse_model: bool = False
    train: TrainSettings = field(default_factory=TrainSettings)
    quant: QuantSettings = field(default_factory=QuantSettings)
    prune: PruneSettings = field(default_factory=PruneSettings)
    quality: QualitySettings = field(default_factory=QualitySettings)
    eval_batch_size: int = 32
    max_eval_sentences: int | None = None
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self) -> None:
        _positive(self, "eval_batch_size", "threads")
        if self.max_eval_sentences is not None and self.max_eval_sentences <= 0:
            raise ConfigError(f"max_eval_sentences={self.max_eval_sentences} must be positive (or empty for all).")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"SCHEME={self.scheme!r} is not one of {', '.join(SCHEMES)}.")

    @property
    def source(self) -> DataSource:
        """Where the data is and how to read it."""
        return DataSource(self.data, self.scheme, self.hub_tokens, self.hub_tags, dict(self.hub_splits))

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> BuildSettings:
        """Settings from ``MODEL``, ``DATA``, ``ARTIFACTS``, ``EPOCHS``, ``MAX_TRAIN_SENTENCES``,
        ``MAX_EVAL_SENTENCES``, ``MODEL_REPOSITORY``, ``REUSE_MODEL``, ``CASING``, ``SEED``, ``LR``, ``BATCH_SIZE``,
        ``CALIB_SENTENCES``, ``SMOOTHQUANT``, ``MAX_F1_DROP``, ``SERVE``, ``PRUNE``, ``MIN_STEPS``, ``MAX_EPOCHS``,
        ``SCHEME``, ``HUB_TOKENS``, ``HUB_TAGS``, ``HUB_SPLITS``, ``MIN_F1``, ``BASELINE_MARGIN``, ``REQUIRE_INT8``,
        ``CONTEXT``."""
        env = dict(os.environ if env is None else env)
        base = cls()
        train = replace(
            base.train,
            **_env_fields(
                env,
                {
                    "EPOCHS": ("epochs", int),
                    "MIN_STEPS": ("min_steps", int),
                    "MAX_EPOCHS": ("max_epochs", int),
                    "MAX_TRAIN_SENTENCES": ("max_train_sentences", int),
                    "CASING": ("use_casing", _bool),
                    "SEED": ("seed", int),
                    "LR": ("learning_rate", float),
                    "BATCH_SIZE": ("batch_size", int),
                    "CONTEXT": ("context_tokens", int),
                },
            ),
        )
        train = replace(train, explicit=tuple(n for v, n in _EXPLICIT.items() if env.get(v, "").strip()))
        quant = replace(
            base.quant,
            **_env_fields(
                env,
                {
                    "CALIB_SENTENCES": ("calibration_sentences", int),
                    "SMOOTHQUANT": ("smooth_alpha", float),
                    "MAX_F1_DROP": ("max_f1_drop_points", float),
                    "SERVE": ("serve", lambda s: s.strip().lower()),
                    "REQUIRE_INT8": ("require_int8", _bool),
                },
            ),
        )
        top = _env_fields(
            env,
            {
                "MODEL": ("model", str),
                "DATA": ("data", str),
                "ARTIFACTS": ("artifacts", Path),
                "MAX_EVAL_SENTENCES": ("max_eval_sentences", int),
                "MODEL_REPOSITORY": ("repository", _repository),
                "REUSE_MODEL": ("reuse_model", _bool),
                "PRUNE": ("prune", _prune),
                "SCHEME": ("scheme", lambda s: s.strip().lower()),
                "HUB_TOKENS": ("hub_tokens", str),
                "HUB_TAGS": ("hub_tags", str),
                "HUB_SPLITS": ("hub_splits", _hub_splits),
            },
        )
        quality = replace(
            base.quality,
            **_env_fields(
                env,
                {"MIN_F1": ("min_f1", float), "BASELINE_MARGIN": ("baseline_margin_points", _optional_float)},
            ),
        )
        return replace(base, train=train, quant=quant, quality=quality, **top)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, TrainSettings | QuantSettings | PruneSettings | QualitySettings):
                out[f.name] = {g.name: getattr(value, g.name) for g in fields(value)}
            else:
                out[f.name] = str(value) if isinstance(value, Path) else value
        return out


def _hub_splits(text: str) -> tuple[tuple[str, str], ...]:
    """``HUB_SPLITS=valid=dev`` (any of train/valid/test): our split -> the dataset's; the rest keep defaults."""
    pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
    if any(len(p) != 2 or p[0].strip() not in HUB_SPLITS or not p[1].strip() for p in pairs):
        raise ValueError(f"expected SPLIT=NAME pairs with SPLIT in {list(HUB_SPLITS)}, e.g. valid=dev")
    return tuple({**HUB_SPLITS, **{a.strip(): b.strip() for a, b in pairs}}.items())


def data_source(location: str | None = None, env: dict[str, str] | None = None) -> DataSource:
    """The data every command reads: ``location`` (default ``DATA``, else :func:`default_data`) with the
    ``SCHEME`` and ``HUB_*`` settings of the environment, as the build reads it."""
    env = dict(os.environ if env is None else env)
    s = BuildSettings.from_env({k: v for k, v in env.items() if k in _DATA_VARIABLES})
    return replace(s, data=location or s.data).source


def _optional_float(text: str) -> float | None:
    """A number, or ``off`` / ``none`` for None."""
    return None if text.strip().lower() in {"off", "none"} else float(text)


def _prune(text: str) -> PruneSettings:
    return PruneSettings.parse(text)


def _repository(text: str) -> Path | None:
    """``MODEL_REPOSITORY``: where the build installs the served model; ``none`` skips that step."""
    return None if text.strip().lower() == "none" else Path(text)


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in {"1", "true", "yes", "on"}:
        return True
    if low in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{text!r} is not a boolean (use 1/0)")


def _env_fields(env: dict[str, str], spec: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for var, (name, conv) in spec.items():
        raw = env.get(var, "").strip()
        if not raw:
            continue
        try:
            out[name] = conv(raw)
        except ValueError as exc:
            raise ConfigError(f"{var}={raw!r} is not valid: {exc}. Unset it to use the default.") from exc
    return out


def _positive(obj: object, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if value <= 0:
            raise ConfigError(f"{name}={value} must be a positive integer.")


_EXPLICIT = {"EPOCHS": "epochs", "MIN_STEPS": "min_steps"}  # training variables whose presence is recorded
_DATA_VARIABLES = ("DATA", "SCHEME", "HUB_TOKENS", "HUB_TAGS", "HUB_SPLITS")
