"""``ner-rollout``: make every replica serve what the model repository now holds, through Triton's repository API.

The servers run with ``--model-control-mode=explicit --load-model=*``: they load the repository once at start
and change nothing until told to. A rollout is then two steps, in this order:

1. put the new version into the repository (``ner-repository --artifacts`` writes version N+1 of every BERT
   step; on object storage, upload it) - no replica notices yet;
2. ``ner-rollout`` asks each replica in turn to load every model again (``POST v2/repository/models/<m>/load``
   over gRPC, with the admin header): Triton loads the new version next to the old one, switches over when it is
   ready, and only then unloads the old one, so requests in flight never fail; models that did not change are not
   reloaded. Finally it checks that all replicas serve the same versions.

Unlike ``--model-control-mode=poll``, replicas never serve different versions for a poll interval, a half-copied
version is never picked up, and nothing in the serving pods needs write access or a timer.

    TRITON_ADMIN_KEY=... ner-rollout --url 127.0.0.1:8001
    ner-rollout --dns ner-triton-headless.ner.svc.cluster.local:8001      # every ready pod (in the cluster)
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ner_triton.cli import Command, emit_json
from ner_triton.client import Tls, channel_args, check_headers
from ner_triton.errors import ConfigError, ServerError
from ner_triton.serving.server import GRPC_ADMIN_HEADER

log = logging.getLogger(__name__)

ADMIN_KEY_ENV = "TRITON_ADMIN_KEY"


def admin_headers(admin_key: str | None) -> dict[str, str]:
    return check_headers({GRPC_ADMIN_HEADER: admin_key}) if admin_key else {}


def resolve(target: str) -> list[str]:
    """``host:port`` of every address a DNS name has (a headless Service: one per ready pod), sorted."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--dns {target!r} must be host:port, e.g. ner-triton-headless.ner.svc:8001.")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve {host!r} ({exc.strerror}): run where the cluster's DNS answers.") from exc
    addresses = sorted({str(info[4][0]) for info in infos})
    return [f"[{a}]:{port}" if ":" in a else f"{a}:{port}" for a in addresses]


@dataclass(frozen=True)
class ReplicaState:
    url: str
    loaded: tuple[str, ...]  # models the rollout asked to load
    versions: dict[str, tuple[str, ...]]  # model -> versions READY after the rollout

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "loaded": list(self.loaded),
            "versions": {k: list(v) for k, v in self.versions.items()},
        }


def served_versions(index: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """model -> its READY versions, from a repository index (``get_model_repository_index(as_json=True)``)."""
    out: dict[str, list[str]] = {}
    for entry in index:
        out.setdefault(entry["name"], [])
        if entry.get("state") == "READY" and entry.get("version"):
            out[entry["name"]].append(str(entry["version"]))
    return {name: tuple(sorted(v, key=lambda x: (len(x), x))) for name, v in sorted(out.items())}


def rollout_replica(
    url: str,
    admin_key: str | None,
    models: Sequence[str] = (),
    tls: Tls | None = None,
    timeout_s: float = 600.0,
    settle_s: float = 30.0,
) -> ReplicaState:
    """Load ``models`` (default: every model of the replica's repository) on one replica, then wait until no
    model has a version still loading or unloading (at most ``settle_s``)."""
    import tritonclient.grpc as grpcclient

    headers = admin_headers(admin_key) or None
    kwargs: dict[str, Any] = {"url": url, "channel_args": channel_args(tls)}
    if tls is not None:
        kwargs["creds"] = tls.credentials()
    client = grpcclient.InferenceServerClient(**kwargs)
    try:
        try:
            index = client.get_model_repository_index(headers=headers, as_json=True, client_timeout=30).get(
                "models", []
            )
        except grpcclient.InferenceServerException as exc:
            raise ServerError(
                f"{url}: cannot read the model repository index ({exc.message()}): check the address and that "
                f"${ADMIN_KEY_ENV} is the key the server was started with (--grpc-restricted-protocol)."
            ) from exc
        names = list(models) or sorted({entry["name"] for entry in index})
        if not names:
            raise ServerError(f"{url}: the model repository holds no model: nothing to roll out.")
        for name in names:
            start = time.monotonic()
            try:
                client.load_model(name, headers=headers, client_timeout=timeout_s)
            except grpcclient.InferenceServerException as exc:
                raise ServerError(
                    f"{url}: loading {name!r} failed, the replica keeps serving the version it had: {exc.message()}"
                ) from exc
            log.info("%s: %s loaded (%.1f s)", url, name, time.monotonic() - start)
        deadline = time.monotonic() + settle_s
        while True:
            index = client.get_model_repository_index(headers=headers, as_json=True).get("models", [])
            busy = [e for e in index if e.get("state") in ("LOADING", "UNLOADING")]
            if not busy or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return ReplicaState(url, tuple(names), served_versions(index))
    finally:
        client.close()


def rollout(
    urls: Sequence[str], admin_key: str | None, models: Sequence[str] = (), tls: Tls | None = None
) -> list[ReplicaState]:
    """Roll every replica, one after the other; raises when they end up serving different versions."""
    if not urls:
        raise ConfigError("no replica to roll out: give --url (repeatable) or --dns.")
    states = [rollout_replica(url, admin_key, models, tls) for url in urls]
    first = states[0].versions
    differ = [s.url for s in states[1:] if s.versions != first]
    if differ:
        raise ServerError(
            f"replicas serve different versions after the rollout: {states[0].url} {first}, but "
            + "; ".join(f"{s.url} {s.versions}" for s in states if s.url in differ)
            + ". Do they read the same repository? Run ner-rollout again once it is complete."
        )
    return states


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", action="append", default=[], help="gRPC address of a replica (repeatable)")
    parser.add_argument("--dns", help="host:port whose DNS records are the replicas (a headless Service)")
    parser.add_argument("--model", action="append", default=[], help="model to load (default: all; repeatable)")
    parser.add_argument(
        "--admin-key-env",
        default=ADMIN_KEY_ENV,
        help=f"environment variable holding the admin key (default: {ADMIN_KEY_ENV}; never on the command line)",
    )
    tls = parser.add_argument_group("TLS (servers started with --grpc-use-ssl)")
    tls.add_argument("--ssl", action="store_true", help="use TLS")
    tls.add_argument("--root-certificates", type=Path, help="PEM CA bundle that signed the servers")
    tls.add_argument("--tls-server-name", help="name to verify in the server certificates")
    parser.add_argument("--output", type=Path, help="also write the result as JSON here")


def _run(args: argparse.Namespace) -> int:
    urls = list(args.url) + (resolve(args.dns) if args.dns else [])
    admin_key = os.environ.get(args.admin_key_env, "").strip() or None
    if admin_key is None:
        log.warning("$%s is not set: calling the repository API without the admin header", args.admin_key_env)
    tls = (
        Tls(args.root_certificates, server_name=args.tls_server_name)
        if args.ssl or args.root_certificates or args.tls_server_name
        else None
    )
    states = rollout(urls, admin_key, args.model, tls)
    emit_json({"replicas": [s.as_dict() for s in states]}, args.output)
    return 0


main = Command("ner-rollout", __doc__ or "", _add_arguments, _run).main


if __name__ == "__main__":
    raise SystemExit(main())
