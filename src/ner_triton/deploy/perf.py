"""``ner-perf-inputs``: what Triton's own performance tools need to measure and tune the ``ner`` ensemble.

The files target the ensemble interface (TEXT ``[n]``) of the NGC and GPU layouts, where these tools run. On the
local python layout ``ner`` is a one-step batching model (TEXT ``[n, 1]``); its ensembles are ``ner_<variant>``.

perf_analyzer invents random input data, which for a string input like ``TEXT`` means random bytes that are
not text; and Model Analyzer needs to be told how to drive an ensemble whose pre/post steps are python models.
This command writes both from the data you serve:

* ``ner_inputs.json`` - perf_analyzer's ``--input-data`` file: one request per entry, ``texts_per_request``
  real sentences each (``{"data": [{"TEXT": {"content": [...], "shape": [n]}}, ...]}``);
* ``model_analyzer.yaml`` - a Model Analyzer ``profile`` config for the ensemble (quick search over the
  composing models, the input file above, a p99 latency constraint, gRPC).

    ner-perf-inputs --data ../shared/data/conll2003 --output perf/            # the test split's sentences
    ner-perf-inputs --data loadtest/data/sentences.txt --output perf/         # a text file, one text per line

docs/deploy-gpu-host.md has the perf_analyzer and model-analyzer commands that use them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ner_triton.cli import Command
from ner_triton.errors import ConfigError, DataError
from ner_triton.loadtest.texts import TextPool
from ner_triton.schema import ENSEMBLE, TEXT
from ner_triton.settings import default_data

log = logging.getLogger(__name__)

INPUTS_FILE = "ner_inputs.json"
ANALYZER_FILE = "model_analyzer.yaml"
LAUNCH_MODES = ("docker", "local", "remote")


def perf_inputs(texts: Sequence[str], texts_per_request: int = 1) -> dict[str, Any]:
    """perf_analyzer's input-data document: each entry is one request of ``texts_per_request`` texts (BYTES
    content is given as strings; ``shape`` is the request's, as the ensemble's ``TEXT`` input is ``[-1]``)."""
    if texts_per_request < 1:
        raise ConfigError(f"texts_per_request={texts_per_request} must be >= 1.")
    if len(texts) < texts_per_request:
        raise DataError(f"{len(texts)} texts cannot fill one request of {texts_per_request}: give more data.")
    data = []
    for i in range(0, len(texts) - texts_per_request + 1, texts_per_request):
        chunk = list(texts[i : i + texts_per_request])
        data.append({TEXT: {"content": chunk, "shape": [len(chunk)]}})
    return {"data": data}


@dataclass(frozen=True)
class AnalyzerSettings:
    """What the Model Analyzer config says; paths are as Model Analyzer will see them."""

    model_repository: str
    input_data: str
    output_repository: str = "model_analyzer/output_repository"
    export_path: str = "model_analyzer/results"
    launch_mode: str = "docker"
    docker_image: str = "ner-triton-server:0.1.0"
    grpc_endpoint: str = "localhost:8001"
    texts_per_request: int = 1
    p99_latency_ms: int = 200
    model: str = ENSEMBLE

    def __post_init__(self) -> None:
        if self.launch_mode not in LAUNCH_MODES:
            raise ConfigError(f"launch mode {self.launch_mode!r} is not one of {LAUNCH_MODES}.")
        if self.p99_latency_ms <= 0:
            raise ConfigError(f"p99_latency_ms={self.p99_latency_ms} must be > 0.")


def analyzer_config(s: AnalyzerSettings) -> dict[str, Any]:
    """A ``model-analyzer profile`` config for the ensemble: quick search (the mode Model Analyzer supports for
    ensembles) over the composing models' instance counts and batching, under a p99 latency constraint."""
    config: dict[str, Any] = {
        "model_repository": s.model_repository,
        "output_model_repository_path": s.output_repository,
        "override_output_model_repository": True,
        "export_path": s.export_path,
        "triton_launch_mode": s.launch_mode,
        "client_protocol": "grpc",
        "run_config_search_mode": "quick",
        "profile_models": {
            s.model: {
                "perf_analyzer_flags": {"input-data": s.input_data, "shape": f"{TEXT}:{s.texts_per_request}"},
            }
        },
        "constraints": {"perf_latency_p99": {"max": s.p99_latency_ms}},
        "objectives": ["perf_throughput"],
    }
    if s.launch_mode == "docker":
        # The server image: the python steps import ner_triton, which the stock NGC image does not have.
        config["triton_docker_image"] = s.docker_image
        config["triton_docker_shm_size"] = "1G"
    if s.launch_mode == "remote":
        # Remote: the server is already running; Model Analyzer only measures, it cannot change configs - and must
        # not load or unload models there (without reload_model_disable it does: refused by the admin key, or,
        # on a server without one, unloading production's `ner`).
        config["triton_grpc_endpoint"] = s.grpc_endpoint
        config["run_config_search_disable"] = True
        config["reload_model_disable"] = True
        config["concurrency"] = [1, 2, 4, 8, 16, 32, 64]
        del config["run_config_search_mode"]
    return config


def load_texts(data: str, max_texts: int, seed: int = 13) -> list[str]:
    """Sentences of a text file (one per line) or of a data location's test split, shuffled, at most ``max_texts``."""
    pool = TextPool.from_source(data, seed=seed)
    texts = list(pool.sentences)
    random.Random(seed).shuffle(texts)
    return texts[:max_texts]


def write(output: Path, texts: Sequence[str], settings: AnalyzerSettings) -> tuple[Path, Path]:
    """Write ``ner_inputs.json`` and ``model_analyzer.yaml`` into ``output``; returns both paths."""
    output.mkdir(parents=True, exist_ok=True)
    inputs = output / INPUTS_FILE
    inputs.write_text(
        json.dumps(perf_inputs(texts, settings.texts_per_request), ensure_ascii=False, indent=1) + "\n",
        encoding="utf-8",
    )
    analyzer = output / ANALYZER_FILE
    header = (
        "# Model Analyzer profile config of the NER ensemble, generated by ner-perf-inputs.\n"
        "#   model-analyzer profile -f " + str(analyzer) + "\n"
    )
    analyzer.write_text(header + yaml.safe_dump(analyzer_config(settings), sort_keys=False), encoding="utf-8")
    return inputs, analyzer


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default=None,
        help="a text file (one text per line) or a data directory / hub[:<dataset>] (default: $DATA or CoNLL-2003)",
    )
    parser.add_argument("--output", type=Path, default=Path("perf"), help="directory to write into (default: perf)")
    parser.add_argument("--max-texts", type=int, default=1000, help="sentences to put in the file (default: 1000)")
    parser.add_argument("--texts-per-request", type=int, default=1, help="texts in one request (default: 1)")
    parser.add_argument(
        "--model-repository",
        default=str(Path("model_repository_gpu").resolve()),
        help="model repository as Model Analyzer sees it (default: ./model_repository_gpu, absolute)",
    )
    parser.add_argument("--launch-mode", choices=LAUNCH_MODES, default="docker", help="Model Analyzer's Triton")
    parser.add_argument("--docker-image", default=AnalyzerSettings.docker_image, help="server image (docker mode)")
    parser.add_argument("--grpc-endpoint", default=AnalyzerSettings.grpc_endpoint, help="server (remote mode)")
    parser.add_argument("--p99-latency-ms", type=int, default=AnalyzerSettings.p99_latency_ms)


def _run(args: argparse.Namespace) -> int:
    if args.max_texts < 1:
        args.parser.error("--max-texts must be >= 1")
    data = args.data or os.environ.get("DATA") or default_data()
    texts = load_texts(data, args.max_texts)
    output = args.output.resolve()
    settings = AnalyzerSettings(
        model_repository=args.model_repository,
        input_data=str(output / INPUTS_FILE),
        output_repository=str(output / "model_analyzer" / "output_repository"),
        export_path=str(output / "model_analyzer" / "results"),
        launch_mode=args.launch_mode,
        docker_image=args.docker_image,
        grpc_endpoint=args.grpc_endpoint,
        texts_per_request=args.texts_per_request,
        p99_latency_ms=args.p99_latency_ms,
    )
    inputs, analyzer = write(output, texts, settings)
    (output / "model_analyzer").mkdir(exist_ok=True)  # Model Analyzer checks that the export path's parent exists
    print(f"perf_analyzer input data: {inputs} ({len(texts)} texts)")
    print(f"Model Analyzer config:    {analyzer}")
    return 0


main = Command("ner-perf-inputs", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
