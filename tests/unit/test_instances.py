"""Instances follow the CPUs: the cgroup/affinity detection (fake cgroup trees in tmp_path), NER_INSTANCES, the
repository writer's count and the container entrypoint's view of a read-only repository."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from ner_triton.cpus import (
    available_cpus,
    cgroup_cpu_quota,
    cpu_model,
    instance_count,
    instances_from_env,
    parse_instances,
    sweep_choice,
    threads_from_env,
)
from ner_triton.errors import ConfigError
from ner_triton.repository.model_configs import (
    SPARE_PRIORITY,
    RepositorySettings,
    first_choice_groups,
    fused_config,
    instances_of,
    parse_pbtxt,
    to_pbtxt,
    with_instances,
)
from ner_triton.repository.render import write_configs
from ner_triton.runtime.limits import Limits
from ner_triton.serving.entrypoint import fused_instances, rewrite_command, served_repository, server_environment
from ner_triton.variants import Layout


def _v2(tmp_path: Path, cpu_max: dict[str, str], self_path: str = "/") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for rel, value in cpu_max.items():
        d = root / rel.strip("/") if rel.strip("/") else root
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(value + "\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text(f"0::{self_path}\n")
    return root, proc


def _v1(tmp_path: Path, quota: int, period: int = 100000, mount: str = "cpu,cpuacct") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    d = root / mount / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text(f"{quota}\n")
    (d / "cpu.cfs_period_us").write_text(f"{period}\n")
    (root / mount / "cpu.cfs_quota_us").write_text("-1\n")
    (root / mount / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text("12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n")
    return root, proc


def test_cgroup_v2_quota_rounds_up_and_caps_the_affinity(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, {"/": "350000 100000"})  # limits.cpu: 3500m in a container's own namespace
    assert cgroup_cpu_quota(root, proc) == pytest.approx(3.5)
    assert available_cpus(root, proc, affinity=16) == 4
    assert available_cpus(root, proc, affinity=2) == 2  # --cpuset-cpus narrower than the quota


def test_cgroup_v2_unlimited_falls_back_to_affinity(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, {"/": "max 100000"})
    assert cgroup_cpu_quota(root, proc) is None
    assert available_cpus(root, proc, affinity=6) == 6


def test_cgroup_v2_takes_the_tightest_ancestor(tmp_path: Path) -> None:
    root, proc = _v2(
        tmp_path,
        {"/kubepods.slice": "200000 100000", "/kubepods.slice/pod1/ctr": "max 100000"},
        "/kubepods.slice/pod1/ctr",
    )
    assert available_cpus(root, proc, affinity=64) == 2


def test_cgroup_v2_fraction_below_one_cpu_is_one_instance(tmp_path: Path) -> None:
    root, proc = _v2(tmp_path, {"/": "50000 100000"})
    assert available_cpus(root, proc, affinity=8) == 1


@pytest.mark.parametrize("mount", ["cpu,cpuacct", "cpu"])
def test_cgroup_v1_quota(tmp_path: Path, mount: str) -> None:
    root, proc = _v1(tmp_path, quota=300000, mount=mount)
    assert available_cpus(root, proc, affinity=16) == 3


def test_cgroup_v1_unlimited(tmp_path: Path) -> None:
    root, proc = _v1(tmp_path, quota=-1)
    assert available_cpus(root, proc, affinity=5) == 5


def test_no_cgroup_files_means_affinity(tmp_path: Path) -> None:
    assert available_cpus(tmp_path / "none", tmp_path / "none", affinity=3) == 3


def test_this_machine_reports_at_least_one_cpu() -> None:
    assert 1 <= available_cpus() <= (os.cpu_count() or 1)


def test_ner_instances_setting() -> None:
    assert parse_instances("4") == 4
    assert parse_instances("auto") is None and parse_instances("") is None
    assert instances_from_env({}) is None
    assert instances_from_env({"NER_INSTANCES": "7"}) == 7
    assert instances_from_env({"NER_INSTANCES": "auto"}) == available_cpus()
    assert instance_count({}) == available_cpus()
    for bad in ("0", "-2", "four", "1.5"):
        with pytest.raises(ConfigError, match=r"NER_INSTANCES=.*must be a whole number"):
            parse_instances(bad)


def test_repository_writer_applies_ner_instances_only_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NER_INSTANCES", raising=False)
    default = fused_config(RepositorySettings())
    # one instance per CPU plus one per bulk slot (runtime.limits): the committed files stay unchanged
    bulk = Limits().bulk_slots
    assert instances_of(default) == RepositorySettings().batching.instances + bulk
    monkeypatch.setenv("NER_INSTANCES", "6")
    assert instances_of(fused_config(RepositorySettings())) == 6 + bulk


def test_ner_has_one_first_choice_instance_and_spares(monkeypatch: pytest.MonkeyPatch) -> None:
    """One request at a time goes to the same warm process: Triton's rate limiter (the server runs with
    RATE_LIMIT) takes the free instance of lowest executions x priority, so the first-choice instance runs until it
    has done SPARE_PRIORITY times a spare's executions - or is busy, when a spare takes the batch."""
    monkeypatch.delenv("NER_INSTANCES", raising=False)
    first, spares = fused_config(RepositorySettings()).instance_group
    assert (first.count, first.rate_limiter.priority) == (1, 1)
    assert (spares.count, spares.rate_limiter.priority) == (
        RepositorySettings().batching.instances + Limits().bulk_slots - 1,
        SPARE_PRIORITY,
    )
    assert {first.kind, spares.kind} == {mc.ModelInstanceGroup.KIND_CPU}
    (alone,) = first_choice_groups(1)  # no spares, no empty group (Triton refuses count 0)
    assert alone.count == 1
    with pytest.raises(ConfigError, match="instance count 0"):
        with_instances(fused_config(RepositorySettings()), 0)


def test_a_repository_written_before_the_first_choice_instance_gets_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A config with one plain group of the right count (written before the priorities) is served through a view
    with the first-choice groups, not as it is."""
    repo = write_configs(RepositorySettings(ner_instances=None), tmp_path / "models", Layout.PYTHON)
    path = repo / "ner" / "config.pbtxt"
    old = parse_pbtxt(path.read_text())
    del old.instance_group[:]
    old.instance_group.add(count=2 + Limits().bulk_slots, kind=mc.ModelInstanceGroup.KIND_CPU)
    path.write_text(to_pbtxt(old))
    view = tmp_path / "view"
    with caplog.at_level("WARNING"):
        assert served_repository(repo, 2, view) == view
    assert "not as one first-choice instance and spares" in caplog.text, "the log says why, not 'N wanted, N there'"
    assert list(parse_pbtxt((view / "ner" / "config.pbtxt").read_text()).instance_group) == first_choice_groups(
        2 + Limits().bulk_slots
    )


@pytest.fixture
def repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A python-layout repository (configs as ner-repository writes them, count 2), read-only like the mounts."""
    monkeypatch.delenv("NER_INSTANCES", raising=False)
    repo = write_configs(RepositorySettings(), tmp_path / "models", Layout.PYTHON)
    (repo / "ner" / "1" / "model.onnx").write_bytes(b"weights")
    for path in sorted(repo.rglob("*"), reverse=True):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    yield repo
    for path in [repo, *repo.rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_entrypoint_serves_a_view_with_the_count(repository: Path, tmp_path: Path) -> None:
    view = tmp_path / "view"
    command = ["tritonserver", f"--model-repository={repository}", "--model-control-mode=explicit"]
    out = rewrite_command(command, {"NER_INSTANCES": "5", "NER_REPOSITORY_VIEW": str(view)})
    assert out == ["tritonserver", f"--model-repository={view}", "--model-control-mode=explicit"]
    cfg = parse_pbtxt((view / "ner" / "config.pbtxt").read_text())
    assert instances_of(cfg) == 5 + Limits().bulk_slots and cfg.backend == "python"
    # everything else is the mounted repository itself (links), the original untouched
    assert (view / "ner" / "1").resolve() == (repository / "ner" / "1").resolve()
    assert (view / "ner" / "1" / "model.onnx").read_bytes() == b"weights"
    assert (view / "ner_preprocess").is_symlink()
    assert fused_instances(repository) == 2 + Limits().bulk_slots
    # the rest of the config is the repository's, field for field
    original = parse_pbtxt((repository / "ner" / "config.pbtxt").read_text())
    del original.instance_group[:]
    original.instance_group.extend(first_choice_groups(5 + Limits().bulk_slots))
    assert to_pbtxt(cfg) == to_pbtxt(original)


def test_entrypoint_keeps_a_repository_that_already_has_the_count(repository: Path, tmp_path: Path) -> None:
    command = ["tritonserver", "--model-repository", str(repository)]
    assert rewrite_command(command, {"NER_INSTANCES": "2", "NER_REPOSITORY_VIEW": str(tmp_path / "v")}) == command
    assert not (tmp_path / "v").exists()


def test_entrypoint_leaves_ensembles_and_remote_repositories_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NER_INSTANCES", raising=False)
    ngc = write_configs(RepositorySettings(), tmp_path / "ngc", Layout.ONNXRUNTIME)
    assert fused_instances(ngc) is None
    assert served_repository(ngc, 8, tmp_path / "v") == ngc
    remote = ["tritonserver", "--model-repository=s3://bucket/ner"]
    assert rewrite_command(remote, {"NER_INSTANCES": "3"}) == remote


def test_entrypoint_refuses_a_view_inside_the_repository(repository: Path) -> None:
    with pytest.raises(ConfigError, match="NER_REPOSITORY_VIEW"):
        served_repository(repository, 4, repository / "view")


def test_entrypoint_imports_light_in_a_fresh_interpreter() -> None:
    """The server image has no torch or transformers: the entrypoint must not load them (nor the build)."""
    import subprocess
    import sys

    code = (
        "import sys, ner_triton.serving.entrypoint\n"
        "heavy = [m for m in ('torch', 'transformers', 'tqdm', 'seqeval', 'ner_triton.pipeline') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def _sweep_report(path: Path, model: str, cpus: int, instances: int, threads: int) -> Path:
    row = {"instances": instances, "threads": threads, "sent_s": 100.0, "p50_ms": 5.0, "p99_ms": 6.0}
    host = {"cpu_model": model, "cpus": cpus, "cpu_flags": []}
    path.write_text(json.dumps({"host": host, "rows": [row], "best": row}))
    return path


def test_auto_takes_this_hosts_sweep_and_ignores_another_hosts(tmp_path: Path) -> None:
    here = _sweep_report(tmp_path / "here.json", cpu_model(), available_cpus(), instances=1, threads=3)
    env = {"NER_INSTANCES": "auto", "NER_SWEEP": str(here)}
    assert sweep_choice(env) == (1, 3)
    assert instances_from_env(env) == 1 and threads_from_env(env) == 3
    assert instance_count({"NER_SWEEP": str(here)}) == 1  # the entrypoint's detection without NER_INSTANCES
    assert threads_from_env({**env, "NER_ORT_THREADS": "2"}) == 2  # an explicit thread count wins
    assert threads_from_env({"NER_INSTANCES": "4", "NER_SWEEP": str(here)}) is None  # a fixed count: no sweep
    other = _sweep_report(tmp_path / "other.json", "Some Other CPU 9000", available_cpus(), instances=1, threads=3)
    env = {"NER_INSTANCES": "auto", "NER_SWEEP": str(other)}
    assert sweep_choice(env) is None and instances_from_env(env) == available_cpus() and threads_from_env(env) is None
    with pytest.raises(ConfigError, match=r"NER_SWEEP=.*make sweep"):
        sweep_choice({"NER_SWEEP": str(tmp_path / "missing.json")})
    with pytest.raises(ConfigError, match=r"NER_ORT_THREADS=.*whole number"):
        threads_from_env({"NER_ORT_THREADS": "two"})


def test_writer_and_entrypoint_apply_the_sweeps_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = _sweep_report(tmp_path / "here.json", cpu_model(), available_cpus(), instances=1, threads=2)
    monkeypatch.setenv("NER_INSTANCES", "auto")
    monkeypatch.setenv("NER_SWEEP", str(here))
    monkeypatch.delenv("NER_ORT_THREADS", raising=False)
    cfg = fused_config(RepositorySettings())
    assert instances_of(cfg) == 1 + Limits().bulk_slots and cfg.parameters["threads"].string_value == "2"
    assert server_environment({"NER_SWEEP": str(here)})["NER_ORT_THREADS"] == "2"
    assert server_environment({"NER_SWEEP": str(here), "NER_ORT_THREADS": "1"})["NER_ORT_THREADS"] == "1"
    assert "NER_ORT_THREADS" not in server_environment({"NER_SWEEP": str(here), "NER_INSTANCES": "3"})
