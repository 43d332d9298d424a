"""Structured pruning on the tiny model: heads and layers really leave the exported graph, and the pruned
model still exports, quantizes and evaluates (`make prune-sweep` end to end)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import onnx
import pytest

from ner_triton.errors import ConfigError
from ner_triton.modeling import NerModel
from ner_triton.pipeline.prune_sweep import sweep
from ner_triton.settings import BuildSettings, PruneSettings, QuantSettings, TrainSettings
from support import TinyBuild, tiny_settings

pytestmark = pytest.mark.slow


def _initializer_floats(path: Path) -> int:
    total = 0
    for init in onnx.load(str(path)).graph.initializer:
        n = 1
        for d in init.dims:
            n *= d
        total += n
    return total


def test_prune_settings_parse_and_validate() -> None:
    assert PruneSettings.parse("") == PruneSettings() and not PruneSettings().active
    ps = PruneSettings.parse("layers=2,heads=0.25,epochs=1,distill=0.5")
    assert (ps.layers, ps.heads, ps.epochs, ps.distill) == (2, 0.25, 1, 0.5) and ps.active
    for bad in ("layers=x", "depth=2", "heads=1.5", "layers"):
        with pytest.raises(ConfigError, match="PRUNE"):
            PruneSettings.parse(bad)


def test_sweep_removes_heads_and_layers_from_the_exported_graph(
    tiny_build: TinyBuild, conll_dir: Path, tmp_path: Path
) -> None:
    settings = BuildSettings(
        data=str(conll_dir),
        artifacts=tmp_path,
        train=TrainSettings(batch_size=8, learning_rate=5e-3, warmup_ratio=0.0),
        quant=QuantSettings(calibration_sentences=16, calibration_length=32),
        threads=1,
    )
    settings = replace(settings, prune=PruneSettings(importance_batches=4))
    report = json.loads(
        sweep(settings, tiny_build.artifacts / "model", ["heads=0.5", "layers=1"], tmp_path).read_text()
    )
    base, heads, layers = report["levels"]
    assert base["heads_per_layer"] == [2, 2]
    assert sorted(heads["heads_per_layer"]) == [1, 1] and len(layers["heads_per_layer"]) == 1
    for row in (heads, layers):
        assert row["parameters"] < base["parameters"]
        assert 0.0 <= row["f1"] <= 1.0 and row["int8_b32_sentences_per_s"] > 0
    unpruned = _initializer_floats(tmp_path / "unpruned" / "onnx" / "model_fp32.onnx")
    for level in ("heads0.5", "layers1"):
        assert _initializer_floats(tmp_path / level / "onnx" / "model_fp32.onnx") < unpruned, level
        int8 = tmp_path / level / "onnx" / "model_int8.onnx"
        assert int8.stat().st_size < (tmp_path / "unpruned" / "onnx" / "model_int8.onnx").stat().st_size
    # the head-pruned checkpoint reloads with its per-layer head counts
    assert NerModel.load(tmp_path / "heads0.5" / "model").heads_per_layer() == heads["heads_per_layer"]
    assert "| layers=1 |" in (tmp_path / "report.md").read_text() and (tmp_path / "tradeoff.png").is_file()


def test_build_with_prune_serves_the_pruned_model(tiny_model_dir: Path, conll_dir: Path, tmp_path: Path) -> None:
    from ner_triton.pipeline.build import build

    settings = tiny_settings(
        tiny_model_dir,
        conll_dir,
        tmp_path / "artifacts",
        tmp_path / "repo",
        epochs=2,
        prune=PruneSettings(layers=1, importance_batches=4),
    )
    report = json.loads(build(settings).read_text())
    assert report["training"]["pruning"]["dropped_layers"] and report["training"]["pruning"]["heads_per_layer"] == [2]
    assert (tmp_path / "artifacts" / "model_unpruned").is_dir()
    served = tmp_path / "repo" / "ner_bert_int8" / "1" / "model.onnx"
    assert served.read_bytes() == (tmp_path / "artifacts" / "onnx" / "model_int8.onnx").read_bytes()
