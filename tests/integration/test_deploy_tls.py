"""The deploy files' server settings on a real tritonserver: gRPC over TLS as components/tls (and
deploy/compose/tls.yml) start it, the admin key guarding logging and trace as the manifests restrict them, and the
Locust user driving it with the TLS settings compose gives it (environment variables) and a header.

A throwaway CA made with openssl here, as tests/integration/test_client_transport.py does."""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from ner_triton.repository.model_configs import SPARE_PRIORITY
from ner_triton.runtime.limits import Limits
from ner_triton.serving.server import ServerSettings, TritonServer
from support import TinyBuild

pytestmark = [pytest.mark.integration]

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


@dataclass(frozen=True)
class Deployed:
    settings: ServerSettings
    ca: Path
    admin_key: str
    token: str


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _deploy_args(admin_key: str, tls_dir: Path) -> list[str]:
    """The Kubernetes base's admin restrictions and components/tls's flags, with the Secret at ``tls_dir``."""
    (deployment,) = yaml.safe_load_all((K8S / "base" / "deployment.yaml").read_text())
    (triton,) = deployment["spec"]["template"]["spec"]["containers"]
    restricted = [
        a.replace("$(TRITON_ADMIN_KEY)", admin_key)
        for a in triton["args"]
        if a.startswith(("--grpc-restricted-protocol=", "--http-restricted-api="))
    ]
    component = yaml.safe_load((K8S / "components" / "tls" / "kustomization.yaml").read_text())
    ops = yaml.safe_load(component["patches"][0]["patch"])
    tls = [op["value"].replace("/tls/", f"{tls_dir}/") for op in ops if op["path"].endswith("/args/-")]
    assert len(restricted) == 2 and len(tls) == 3
    return restricted + tls


@pytest.fixture(scope="module")
def deployed(tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: apt-get install openssl")
    d = tmp_path_factory.mktemp("tls")
    # The Secret's files as cert-manager writes them: tls.crt, tls.key, ca.crt; the names compose dials.
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=ner-deploy-test-ca", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=triton",
             cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=DNS:triton,DNS:ner-triton.ner.svc,DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "tls.crt", "-days", "1", "-extfile", "san.cnf", cwd=d)  # fmt: skip
    admin_key, token = secrets.token_hex(16), secrets.token_hex(8)
    extra = (*_deploy_args(admin_key, d), f"--grpc-restricted-protocol=inference:x-api-token={token}")
    state = tmp_path_factory.mktemp("tls-deploy-triton")
    settings = ServerSettings.on_free_ports(tiny_build.repository, state, model_control_mode="none", extra_args=extra)
    with TritonServer(settings):
        yield Deployed(settings, d / "ca.crt", admin_key, token)


def _http(url: str, data: dict[str, object] | None = None, headers: dict[str, str] | None = None) -> int:
    body = json.dumps(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_logging_and_trace_need_the_admin_key(deployed: Deployed) -> None:
    """Issue 20: without the key neither HTTP nor gRPC can read or change logging and trace settings."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from ner_triton.client import Tls, channel_args
    from ner_triton.serving.server import ADMIN_HEADER, GRPC_ADMIN_HEADER

    base = deployed.settings.http_url
    verbose = {"log_verbose_level": 1}
    assert _http(f"{base}/v2/logging", verbose) != 200
    assert _http(f"{base}/v2/trace/setting") != 200
    assert _http(f"{base}/v2/logging", verbose, {ADMIN_HEADER: deployed.admin_key}) == 200
    assert _http(f"{base}/v2/trace/setting", None, {ADMIN_HEADER: deployed.admin_key}) == 200
    assert _http(f"{base}/v2/health/ready") == 200  # health stays open (kubelet probes)

    tls = Tls(root_certificates=deployed.ca, server_name="triton")
    client = grpcclient.InferenceServerClient(
        deployed.settings.grpc_url, creds=tls.credentials(), channel_args=channel_args(tls)
    )
    with pytest.raises(InferenceServerException, match=r"(?i)restricted|unavailable|permission"):
        client.get_log_settings()
    with pytest.raises(InferenceServerException):
        client.get_trace_settings()
    assert client.get_log_settings(headers={GRPC_ADMIN_HEADER: deployed.admin_key}, as_json=True)
    client.close()


def _locust(deployed: Deployed, prefix: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(Path(sys.executable).parent / "locust"),
        "-f", str(ROOT / "loadtest" / "locustfile.py"),
        "--headless", "-u", "2", "-r", "2", "-t", "5s", "--stop-timeout", "5",
        "--host", deployed.settings.grpc_url,
        "--ner-data", str(ROOT / "loadtest" / "data" / "sentences.txt"),
        "--document-share", "0",
        "--report-prefix", str(prefix),
        "--slo-p95-ms", "30000", "--slo-p99-ms", "30000",
        *extra,
    ]  # fmt: skip
    full = {k: v for k, v in os.environ.items() if not k.startswith(("NER_GRPC", "NER_TLS", "NER_HEADERS"))}
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, env={**full, **env})
    except subprocess.TimeoutExpired as exc:
        # Seen about once in 20 runs here: a 5 s Locust run records no call and never exits (gRPC's gevent mode;
        # docs/not-done.md). Once more, so that only a repeated hang fails the test, and it is logged.
        tail = (exc.stderr or b"")[-1500:]
        text = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        log.warning("locust %s did not exit within 60 s; running it once more. Its log ended: %s", prefix.name, text)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT, env={**full, **env})


def test_locust_user_speaks_tls_with_headers(deployed: Deployed, tmp_path: Path) -> None:
    """The Locust user with compose's TLS environment (deploy/compose/tls.yml) and a header: every call served;
    without the header Triton refuses every call (the header is what got them through); without TLS none connect."""
    env = {"NER_GRPC_SSL": "true", "NER_TLS_ROOT_CERTIFICATES": str(deployed.ca), "NER_TLS_SERVER_NAME": "triton"}
    header = f"triton-grpc-protocol-x-api-token: {deployed.token}"
    ok = _locust(deployed, tmp_path / "tls", env, "--ner-header", header)
    assert ok.returncode == 0, ok.stderr[-3000:]
    total = next(
        r for r in json.loads((tmp_path / "tls_report.json").read_text())["locust"] if r["name"] == "Aggregated"
    )
    assert total["requests"] > 0 and total["failures"] == 0

    for name, settings, args in (("noheader", env, ()), ("plain", {}, ("--ner-header", header))):
        refused = _locust(deployed, tmp_path / name, settings, *args)
        assert refused.returncode == 1, refused.stderr[-3000:]
        report = json.loads((tmp_path / f"{name}_report.json").read_text())
        total = next(r for r in report["locust"] if r["name"] == "Aggregated")
        assert total["requests"] > 0 and total["failures"] == total["requests"], name
        assert re.search(r"SLO breached: .*error", refused.stderr), refused.stderr[-2000:]


def test_entrypoint_view_serves_ner_with_its_instance_count(
    tiny_build: TinyBuild, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The server image's entrypoint on a real tritonserver: a repository written with another count is served
    through its view (links to the repository, `ner/config.pbtxt` rewritten) with the container's count, and
    `ner` answers."""
    import tritonclient.grpc as grpcclient

    from ner_triton.client import NerClient
    from ner_triton.serving.entrypoint import fused_instances, rewrite_command

    written = fused_instances(tiny_build.repository)
    assert written is not None, "the tiny build's `ner` is the one-step python model"
    want = written - Limits().bulk_slots + 1  # CPUs the container asks for: one more than the tiny build's
    view = tmp_path_factory.mktemp("entrypoint") / "view"
    command = rewrite_command(
        ["tritonserver", f"--model-repository={tiny_build.repository}"],
        {"NER_INSTANCES": str(want), "NER_REPOSITORY_VIEW": str(view)},
    )
    assert command == ["tritonserver", f"--model-repository={view}"]
    state = tmp_path_factory.mktemp("entrypoint-triton")
    settings = ServerSettings.on_free_ports(view, state, model_control_mode="none")
    with TritonServer(settings), NerClient(settings.grpc_url) as client:
        raw = grpcclient.InferenceServerClient(settings.grpc_url)
        groups = raw.get_model_config("ner", as_json=True)["config"]["instance_group"]
        # one first-choice instance (priority 1) and the spares: as Triton read them from the view
        assert [int(g["count"]) for g in groups] == [1, want + Limits().bulk_slots - 1]
        assert [int(g["rate_limiter"]["priority"]) for g in groups] == [1, SPARE_PRIORITY]
        raw.close()
        (entities,) = client.extract(["Maria Lindqvist visited Madrid."])
        assert isinstance(entities, list)
    assert fused_instances(tiny_build.repository) == written, "the repository itself is untouched"
