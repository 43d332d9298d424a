"""The quality-signal baseline of a build: the served variant's signals on the test split.

The served model is run in-process through the very code the server runs (:class:`~ner_triton.runtime.fused.
FusedNer`), and its answers are counted by the very code the server counts them with
(:class:`~ner_triton.signals.SignalCounts`), so live and expected figures share one definition. The build
records the summary in ``Served.signals`` (``report.json``; ``served.json`` of the installed ``ner``), and the
served model exports it as ``ner_baseline_*`` gauges (:mod:`ner_triton.runtime.quality_metrics`).

``ner-signal-baseline`` computes it for an existing build (printed as JSON, or written with ``--output``;
``--update`` writes it into that build's ``report.json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ner_triton.cli import Command, emit_json
from ner_triton.data import load_split
from ner_triton.errors import ModelLoadError
from ner_triton.pipeline.finetune import subsample
from ner_triton.record import BuildReport
from ner_triton.repository.model_configs import RepositorySettings
from ner_triton.runtime.fused import FusedNer
from ner_triton.schema import LABELS_FILE, MODEL_DIR, ONNX_DIR, ONNX_MODEL_FILE, REPORT_JSON, TOKENIZER_DIR
from ner_triton.settings import TrainSettings
from ner_triton.signals import SignalBaseline, SignalCounts
from ner_triton.variants import get

log = logging.getLogger(__name__)
TEXTS_PER_CALL = 32


def signal_baseline(model_dir: Path, onnx_file: Path, texts: Sequence[str], threads: int = 1) -> SignalBaseline:
    """The signals of ``texts`` (one text per request) served by ``onnx_file`` with the tokenizer and labels of
    ``model_dir``, under the default repository limits."""
    if not texts:
        raise ModelLoadError("no test texts to compute the signal baseline on: check the test split (DATA).")
    for path in (onnx_file, model_dir / LABELS_FILE, model_dir / "tokenizer.json"):
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing: run `make build` first.")
    with tempfile.TemporaryDirectory(prefix="ner-signals-") as tmp:
        version = Path(tmp)  # a version directory as install lays it out, made of links to the build's files
        (version / ONNX_MODEL_FILE).symlink_to(onnx_file.resolve())
        (version / TOKENIZER_DIR).symlink_to(model_dir.resolve(), target_is_directory=True)
        (version / LABELS_FILE).symlink_to((model_dir / LABELS_FILE).resolve())
        ner = FusedNer(version, RepositorySettings().limits, threads=threads, spinning=False)
        counts = SignalCounts(ner.post.labels.entity_types, ner.pre.tokenizer.unk_token_id, keep_values=True)
        ner.observer = counts
        for start in range(0, len(texts), TEXTS_PER_CALL):
            part = texts[start : start + TEXTS_PER_CALL]
            ner([np.array([t.encode("utf-8")], dtype=np.object_) for t in part])
    if counts.texts != len(texts):
        refused = {k: v for k, v in counts.rejected.items() if v}
        log.warning("signal baseline: %d of %d test texts were refused (%s)", len(texts) - counts.texts,
                    len(texts), refused)  # fmt: skip
    return SignalBaseline.from_counts(counts)


def for_build(artifacts: Path, texts: Sequence[str] | None = None, threads: int = 1) -> SignalBaseline:
    """The baseline of the build in ``artifacts`` (its served variant; ``texts``: its test split unless given)."""
    report = BuildReport.load(artifacts / REPORT_JSON)
    if report.served.variant is None:
        raise ModelLoadError(f"the build in {artifacts} serves no variant (it failed its gate): nothing to measure.")
    if texts is None:  # the test split the build scored its variants on (pipeline.build.eval_sentences)
        train = dict(report.settings.get("train") or {})
        seed = int(train.get("seed", TrainSettings().seed))
        test = subsample(load_split(report.data, "test"), report.settings.get("max_eval_sentences"), seed)
        texts = [s.text for s in test]
    onnx = artifacts / ONNX_DIR / get(report.served.variant).onnx_file
    return signal_baseline(artifacts / MODEL_DIR, onnx, texts, threads)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="a finished build (report.json)")
    parser.add_argument("--data", type=Path, default=None,
                        help="test split to measure on (default: the build's DATA test split)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--output", type=Path, default=None, help="write the baseline here (JSON)")
    parser.add_argument("--update", action="store_true", help="write it into the build's report.json (served.signals)")


def _run(args: argparse.Namespace) -> int:
    texts = None
    if args.data is not None:
        texts = [s.text for s in load_split(str(args.data), "test")]
    base = for_build(args.artifacts, texts, args.threads)
    out = asdict(base)
    if args.update:
        path = args.artifacts / REPORT_JSON
        report = json.loads(path.read_text(encoding="utf-8"))
        report["served"]["signals"] = out
        BuildReport.from_dict(report, str(path)).write(path)
        log.info("signal baseline written into %s (served.signals)", path)
    emit_json(out, args.output)
    return 0


main = Command("ner-signal-baseline", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
