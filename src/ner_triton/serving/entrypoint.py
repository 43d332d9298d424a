"""The server image's entrypoint: give the one-step ``ner`` one instance per CPU, then exec ``tritonserver``.

    python3 -m ner_triton.serving.entrypoint tritonserver --model-repository=/models ...

The instance count is ``NER_INSTANCES`` when set, else the CPUs the container may use (cgroup quota, else
affinity: :mod:`ner_triton.cpus`). Where the repository's ``ner`` is the python model (the python layout, which
the CPU deployments serve) and its ``config.pbtxt`` asks for another count, the server is started on a *view* of
the repository in ``NER_REPOSITORY_VIEW`` (default ``/tmp/ner-model-repository``): every entry a symbolic link to
the mounted repository (read-only in the containers), except ``ner/config.pbtxt``, rewritten through the protobuf
model config with the count. Elsewhere (an ensemble ``ner``, an object-storage URL, the count already right) the
command runs unchanged.

The view is made once, at start: a new version of ``ner`` (or a new ``version_policy``) written into the mounted
repository later reaches a server running on a view only at its next start. Write the repository with the
servers' count (``NER_INSTANCES=<cpus> ner-repository ...``; compose's ``repository-cpu`` does) and the servers
use it directly, so rollouts through the repository API reach ``ner`` too.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ner_triton.cpus import AUTO, INSTANCES_ENV, THREADS_ENV, instance_count, sweep_choice
from ner_triton.errors import ConfigError
from ner_triton.logs import setup_logging
from ner_triton.repository.model_configs import (
    bulk_lane_instances,
    cpu_groups_only,
    first_choice_groups,
    instances_of,
    parse_pbtxt,
    to_pbtxt,
    with_instances,
)
from ner_triton.schema import ENSEMBLE

if TYPE_CHECKING:
    from tritonclient.grpc import model_config_pb2 as mc

log = logging.getLogger(__name__)

VIEW_ENV = "NER_REPOSITORY_VIEW"
DEFAULT_VIEW = Path("/tmp/ner-model-repository")
REPOSITORY_FLAG = "--model-repository"


def fused_config(repository: Path) -> mc.ModelConfig | None:
    """The config of the repository's one-step python ``ner``; None where ``ner`` is not that model."""
    path = repository / ENSEMBLE / "config.pbtxt"
    if not path.is_file():
        return None
    cfg = parse_pbtxt(path.read_text(encoding="utf-8"))
    if cfg.backend != "python" or not cpu_groups_only(cfg):
        return None
    return cfg


def fused_instances(repository: Path) -> int | None:
    """The instance count of the repository's one-step python ``ner``; None where ``ner`` is not that model."""
    cfg = fused_config(repository)
    return None if cfg is None else instances_of(cfg)


def repository_view(repository: Path, count: int, view: Path) -> Path:
    """``view``: ``repository`` with ``ner`` at ``count`` instances (links to every other entry); returns it."""
    source = repository.resolve()
    if view.resolve() == source or source in view.resolve().parents:
        raise ConfigError(f"{VIEW_ENV}={view} must lie outside the model repository {repository}.")
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir(parents=True)
    for entry in sorted(source.iterdir()):
        if entry.name != ENSEMBLE:
            (view / entry.name).symlink_to(entry)
    (view / ENSEMBLE).mkdir()
    for entry in sorted((source / ENSEMBLE).iterdir()):
        if entry.name != "config.pbtxt":
            (view / ENSEMBLE / entry.name).symlink_to(entry)
    cfg = with_instances(parse_pbtxt((source / ENSEMBLE / "config.pbtxt").read_text(encoding="utf-8")), count)
    (view / ENSEMBLE / "config.pbtxt").write_text(to_pbtxt(cfg), encoding="utf-8")
    return view


def served_repository(repository: Path, count: int, view: Path) -> Path:
    """The repository the server should read: ``repository`` itself when ``ner`` is not the python model or
    already has ``count`` instances for its CPUs (plus its bulk-lane instances: ``bulk_lane_instances``) as one
    first-choice instance and spares (``first_choice_groups``), else a view of it with those
    (:func:`repository_view`)."""
    cfg = fused_config(repository) if repository.is_dir() else None
    if cfg is None:
        return repository
    current = instances_of(cfg)
    count += bulk_lane_instances(cfg)
    if list(cfg.instance_group) == first_choice_groups(count):
        return repository
    if current == count:
        why = f"ner: {count} instances in {repository} but not as one first-choice instance and spares (written before"
        why += " them, or by hand)"
    else:
        why = f"ner: {current} instances in {repository}, {count} wanted here ({INSTANCES_ENV} or the CPUs this "
        why += "container may use)"
    log.warning(
        "%s: serving a view with %d from %s. A new ner version written to the repository reaches this server at "
        "its next start; write the repository with %s=%d to roll it out without restarts.",
        why, count, view, INSTANCES_ENV, count,
    )  # fmt: skip
    return repository_view(repository, count, view)


def rewrite_command(command: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """``command`` (a tritonserver command line) with its local ``--model-repository`` replaced by the
    repository :func:`served_repository` chooses for this container's instance count."""
    env = os.environ if env is None else env
    if not command:
        raise ConfigError(
            "no command: run `python3 -m ner_triton.serving.entrypoint tritonserver --model-repository=...`"
        )
    count = instance_count(env)
    view = Path(env.get(VIEW_ENV) or DEFAULT_VIEW)
    out = list(command)
    for i, arg in enumerate(out):
        flag, sep, value = arg.partition("=")
        if flag != REPOSITORY_FLAG:
            continue
        if not sep:  # --model-repository DIR
            if i + 1 >= len(out):
                raise ConfigError(f"{REPOSITORY_FLAG} needs a value: {REPOSITORY_FLAG}=/models.")
            value = out[i + 1]
        if "://" in value:  # s3:// gs:// as://: Triton reads it itself, the config is the repository's
            log.info("ner: repository %s is remote; its config's instance count is served as written", value)
            continue
        served = served_repository(Path(value), count, view)
        if sep:
            out[i] = f"{REPOSITORY_FLAG}={served}"
        else:
            out[i + 1] = str(served)
        log.info("ner: %d instances (%s), repository %s", count, INSTANCES_ENV, served)
    return out


def server_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: where the instance count is detected (no ``NER_INSTANCES``, or ``auto``) and this
    host's ``make sweep`` report chose threads per instance, ``NER_ORT_THREADS`` is set to them for the stubs (an
    explicit ``NER_ORT_THREADS`` is kept)."""
    out = dict(os.environ if env is None else env)
    detected = (out.get(INSTANCES_ENV) or "").strip().lower() in ("", AUTO)
    if detected and not (out.get(THREADS_ENV) or "").strip():
        choice = sweep_choice(out)
        if choice is not None:
            out[THREADS_ENV] = str(choice[1])
            log.info("ner: %d ONNX Runtime threads per instance (this host's sweep)", choice[1])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    command = rewrite_command(list(sys.argv[1:] if argv is None else argv))
    env = server_environment()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    raise SystemExit(main())
