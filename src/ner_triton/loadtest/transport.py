"""How the Locust user reaches the server: plain gRPC, or TLS (a server started with ``--grpc-use-ssl``, or a
TLS-terminating gateway) with request headers - the same :class:`~ner_triton.client.Tls` and header rules as
``NerClient`` and ``ner-client``. No gevent here: the user module initialises it; this one is testable alone.

Each option has an environment variable, so compose (deploy/compose/tls.yml) and Kubernetes set them without
repeating Locust's command line:

    --ssl                  NER_GRPC_SSL=true
    --root-certificates    NER_TLS_ROOT_CERTIFICATES=/tls/ca.crt   (PEM CA bundle; default: the system's)
    --private-key          NER_TLS_PRIVATE_KEY                      (client certificate: mutual TLS)
    --certificate-chain    NER_TLS_CERTIFICATE_CHAIN
    --tls-server-name      NER_TLS_SERVER_NAME=triton               (name to verify instead of the URL's host)
    --ner-header           NER_HEADERS='authorization: Bearer ...' (repeatable; @FILE reads 'name: value' lines)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ner_triton.client import Tls, channel_args, check_headers
from ner_triton.client_cli import parse_headers


@dataclass(frozen=True)
class Transport:
    """TLS settings (None: plain text) and the headers sent with every call."""

    tls: Tls | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_options(cls, opts: Any) -> Transport:
        """From Locust's parsed options (:func:`add_arguments`)."""
        paths = {
            name: Path(value) if value else None
            for name in ("root_certificates", "private_key", "certificate_chain")
            for value in [getattr(opts, name, None)]
        }
        server_name = getattr(opts, "tls_server_name", None) or None
        use_tls = bool(getattr(opts, "ssl", False)) or any(paths.values()) or server_name is not None
        tls = Tls(**paths, server_name=server_name) if use_tls else None
        return cls(tls, check_headers(parse_headers(list(getattr(opts, "ner_header", None) or []))))

    def client_kwargs(self, url: str) -> dict[str, Any]:
        """Keyword arguments of ``tritonclient.grpc.InferenceServerClient`` for ``url``."""
        kwargs: dict[str, Any] = {"url": url, "channel_args": channel_args(self.tls)}
        if self.tls is not None:
            kwargs["creds"] = self.tls.credentials()
        return kwargs

    @property
    def call_headers(self) -> dict[str, str] | None:
        return self.headers or None


def add_arguments(parser: Any) -> None:
    """The transport options on Locust's parser (configargparse: each also read from its environment variable)."""
    group = parser.add_argument_group("TLS and headers (a server with --grpc-use-ssl, or a TLS gateway)")
    group.add_argument("--ssl", action="store_true", env_var="NER_GRPC_SSL", help="speak TLS to the server")
    group.add_argument("--root-certificates", env_var="NER_TLS_ROOT_CERTIFICATES", help="PEM CA bundle")
    group.add_argument("--private-key", env_var="NER_TLS_PRIVATE_KEY", help="client key (mutual TLS)")
    group.add_argument("--certificate-chain", env_var="NER_TLS_CERTIFICATE_CHAIN", help="client certificate chain")
    group.add_argument("--tls-server-name", env_var="NER_TLS_SERVER_NAME", help="name to verify in the certificate")
    group.add_argument(
        "--ner-header",
        action="append",
        env_var="NER_HEADERS",
        help="'name: value' sent with every call (repeatable), or @FILE of such lines",
    )
