"""Every layout rolls a build out as version N+1 and declares it in the config (version_policy), on the
rendered files: python, onnxruntime (NGC container) and tensorrt (GPU engine, built by a stand-in here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ner_triton.gpu.engine import export_gpu_repository
from ner_triton.repository.install import served_settings
from ner_triton.repository.model_configs import parse_pbtxt
from ner_triton.repository.render import configs_match, write_configs
from ner_triton.repository.rollout import export_repository, install_new_version, pinned_version, versions
from ner_triton.schema import ENSEMBLE, ONNX_MODEL_FILE
from ner_triton.settings import EngineSettings
from ner_triton.variants import TRT, Layout
from support import TinyBuild

pytestmark = pytest.mark.slow


def _bert_steps(repo: Path) -> list[Path]:
    return sorted(p.parent for p in repo.glob("ner_bert_*/config.pbtxt") if p.parent.name != TRT.triton_name)


@pytest.mark.parametrize("layout", [Layout.PYTHON, Layout.ONNXRUNTIME], ids=lambda x: x.value)
def test_every_rollout_is_the_next_version_and_is_declared(
    tiny_build: TinyBuild, tmp_path: Path, layout: Layout
) -> None:
    repo = tmp_path / "repo"
    export_repository(tiny_build.artifacts, repo, layout)
    steps = _bert_steps(repo) + ([repo / ENSEMBLE] if layout is Layout.PYTHON else [])
    assert steps and all(versions(s) == [1] and pinned_version(s) is None for s in steps)
    for n in (2, 3):
        export_repository(tiny_build.artifacts, repo, layout)  # a new build, or a rollback to an older one
        for step in steps:
            assert versions(step) == [n - 1, n], step.name  # the served version stays next to the new one
            assert pinned_version(step) == n, step.name
            has_model_py = (step / str(n) / "model.py").is_file()
            assert has_model_py is (layout is Layout.PYTHON), "the onnxruntime backend reads only model.onnx"
            assert (step / str(n) / ONNX_MODEL_FILE).is_file()
    assert (repo / ENSEMBLE / "1" / "model.py").is_file() is (layout is Layout.PYTHON)  # committed file kept
    assert configs_match(served_settings(tiny_build.artifacts), repo, layout), "a declared version is no drift"
    pinned = {s: (s / "config.pbtxt").read_text() for s in steps}
    write_configs(served_settings(tiny_build.artifacts), repo, layout)  # `make repository` keeps the pins
    assert {s: (s / "config.pbtxt").read_text() for s in steps} == pinned


def test_an_undeclared_version_is_not_pinned(tiny_build: TinyBuild, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(tiny_build.repository, repo)
    settings = served_settings(tiny_build.artifacts)
    assert install_new_version(settings, tiny_build.artifacts, repo) == 2
    assert install_new_version(settings, tiny_build.artifacts, repo, declare=False) == 3  # a half-done upload
    assert pinned_version(repo / ENSEMBLE) == 2
    cfg = parse_pbtxt((repo / ENSEMBLE / "config.pbtxt").read_text())
    assert list(cfg.version_policy.specific.versions) == [2]


def test_gpu_engine_rolls_out_as_the_next_version(tiny_build: TinyBuild, tmp_path: Path) -> None:
    def build_ok(onnx: Path, out: Path, precision: str, settings: EngineSettings) -> None:
        out.mkdir(parents=True)
        (out / "model.plan").write_bytes(onnx.read_bytes()[:64])  # stands in for TensorRT's output

    repo = tmp_path / "gpu"
    step = repo / TRT.triton_name
    export_gpu_repository(tiny_build.artifacts, repo, EngineSettings(), build_ok)
    assert versions(step) == [1] and pinned_version(step) is None
    for n in (2, 3):
        export_gpu_repository(tiny_build.artifacts, repo, EngineSettings(), build_ok)
        assert versions(step) == [n - 1, n] and pinned_version(step) == n
        assert (step / str(n) / "model.plan").is_file()
