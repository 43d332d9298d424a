"""ner-perf-inputs: perf_analyzer's input-data file and Model Analyzer's config for the `ner` ensemble.

perf_analyzer itself is a C++ binary that nothing here installs (PyPI's "perf-analyzer" is a placeholder
package), so its file is checked against the format perf_analyzer documents and, in
tests/integration/test_perf_inputs_served.py, sent to a real server. Model Analyzer is pure Python: its own
config parser reads the generated config (it insists that a perf_analyzer binary is on PATH, so the test puts
a stand-in there that only exists; nothing runs it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ner_triton.deploy.perf import ANALYZER_FILE, INPUTS_FILE, AnalyzerSettings, analyzer_config, main, perf_inputs
from ner_triton.errors import ConfigError, DataError
from ner_triton.schema import TEXT

ROOT = Path(__file__).resolve().parents[2]
SENTENCES = ROOT / "loadtest" / "data" / "sentences.txt"


def test_inputs_follow_perf_analyzers_format() -> None:
    doc = perf_inputs(["a b", "c", "d e f", "g", "h"], texts_per_request=2)
    assert doc == {
        "data": [
            {TEXT: {"content": ["a b", "c"], "shape": [2]}},
            {TEXT: {"content": ["d e f", "g"], "shape": [2]}},
        ]
    }, "whole requests only; the leftover text is dropped"
    with pytest.raises(ConfigError):
        perf_inputs(["a"], 0)
    with pytest.raises(DataError, match="give more data"):
        perf_inputs(["a"], 2)


def test_command_writes_both_files_from_a_text_file(tmp_path: Path) -> None:
    out = tmp_path / "perf"
    assert main(["--data", str(SENTENCES), "--output", str(out), "--max-texts", "40", "--model-repository",
                 str(tmp_path / "repo")]) == 0  # fmt: skip
    doc = json.loads((out / INPUTS_FILE).read_text(encoding="utf-8"))
    texts = [entry[TEXT]["content"][0] for entry in doc["data"]]
    shipped = {line.strip() for line in SENTENCES.read_text(encoding="utf-8").splitlines() if line.strip()}
    assert len(texts) == 40 and set(texts) <= shipped, "real sentences, not random bytes"
    config = yaml.safe_load((out / ANALYZER_FILE).read_text(encoding="utf-8"))
    flags = config["profile_models"]["ner"]["perf_analyzer_flags"]
    assert flags == {"input-data": str(out / INPUTS_FILE), "shape": f"{TEXT}:1"}
    assert config["run_config_search_mode"] == "quick", "the search mode Model Analyzer has for ensembles"
    assert (out / "model_analyzer").is_dir()


def test_command_reads_a_data_directory(conll_dir: Path, tmp_path: Path) -> None:
    assert main(["--data", str(conll_dir), "--output", str(tmp_path), "--texts-per-request", "3"]) == 0
    doc = json.loads((tmp_path / INPUTS_FILE).read_text(encoding="utf-8"))
    assert doc["data"] and all(len(e[TEXT]["content"]) == 3 == e[TEXT]["shape"][0] for e in doc["data"])


def test_remote_mode_only_measures() -> None:
    config = analyzer_config(AnalyzerSettings("/models", "/in.json", launch_mode="remote", grpc_endpoint="h:8001"))
    assert config["triton_grpc_endpoint"] == "h:8001" and config["run_config_search_disable"] is True
    # Finding 4 of issue 21: never load/unload models on the running (production) server.
    assert config["reload_model_disable"] is True
    assert "run_config_search_mode" not in config and "triton_docker_image" not in config
    with pytest.raises(ConfigError):
        AnalyzerSettings("/m", "/i", launch_mode="kubernetes")


def _model_analyzer_parse(config: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("model_analyzer", reason="triton-model-analyzer not installed (the dev extra has it)")
    stand_in = tmp_path / "bin" / "perf_analyzer"
    stand_in.parent.mkdir()
    stand_in.write_text("#!/bin/sh\necho 'stand-in: perf_analyzer is not installed here' >&2\nexit 1\n")
    stand_in.chmod(0o755)
    code = (
        "import json, sys\n"
        "from model_analyzer.entrypoint import get_cli_and_config_options\n"
        f"sys.argv = ['model-analyzer', 'profile', '-f', {str(config)!r}]\n"
        "_, c = get_cli_and_config_options()\n"
        "print(json.dumps({'mode': c.run_config_search_mode, 'launch': c.triton_launch_mode,\n"
        "  'models': [m.model_name() for m in c.profile_models],\n"
        "  'flags': [m.perf_analyzer_flags() for m in c.profile_models], 'image': c.triton_docker_image,\n"
        "  'reload_model_disable': c.reload_model_disable}))\n"
    )
    env = {**os.environ, "PATH": f"{stand_in.parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


def test_model_analyzer_parses_the_generated_config(tmp_path: Path) -> None:
    out = tmp_path / "perf"
    repository = str(ROOT / "model_repository")  # Model Analyzer checks that the repository exists
    assert (
        main(["--data", str(SENTENCES), "--output", str(out), "--max-texts", "10", "--model-repository", repository])
        == 0
    )
    done = _model_analyzer_parse(out / ANALYZER_FILE, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed["models"] == ["ner"] and parsed["mode"] == "quick" and parsed["launch"] == "docker"
    assert parsed["flags"] == [{"input-data": str(out / INPUTS_FILE), "shape": f"{TEXT}:1"}]
    assert parsed["image"] == AnalyzerSettings.docker_image


def test_model_analyzer_reads_remote_mode_as_measure_only(tmp_path: Path) -> None:
    out = tmp_path / "perf"
    repository = str(ROOT / "model_repository")
    args = ["--data", str(SENTENCES), "--output", str(out), "--max-texts", "10", "--model-repository", repository]
    assert main([*args, "--launch-mode", "remote", "--grpc-endpoint", "127.0.0.1:8001"]) == 0
    done = _model_analyzer_parse(out / ANALYZER_FILE, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    parsed = json.loads(done.stdout.strip().splitlines()[-1])
    assert parsed["launch"] == "remote" and parsed["reload_model_disable"] is True


def test_model_analyzer_rejects_a_misspelt_key(tmp_path: Path) -> None:
    """The parser used above does refuse configs: the test of ours can fail."""
    out = tmp_path / "perf"
    repository = str(ROOT / "model_repository")
    assert (
        main(["--data", str(SENTENCES), "--output", str(out), "--max-texts", "10", "--model-repository", repository])
        == 0
    )
    config = out / ANALYZER_FILE
    config.write_text(config.read_text().replace("perf_analyzer_flags:", "perf_analyser_flags:"))
    done = _model_analyzer_parse(config, tmp_path)
    assert done.returncode != 0 and "profile_models" in done.stdout + done.stderr


def test_docs_never_ask_perf_analyzer_for_a_multiplicative_step() -> None:
    """Finding 5 of issue 21: perf_analyzer's --concurrency-range START:END:STEP adds STEP; `2x` would be read as 2."""
    for path in [*(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").rglob("*.md")]:
        for found in re.findall(r"--concurrency-range[ =](\S+)", path.read_text(encoding="utf-8")):
            assert not re.search(r"[xX*]", found), f"{path.name}: --concurrency-range {found}"
