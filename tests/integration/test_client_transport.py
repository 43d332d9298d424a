"""The production client against real servers: TLS (Triton's own --grpc-use-ssl, and nginx terminating TLS in
front of Triton), request headers (Triton's restricted protocol checks one; nginx checks and logs one), the
error each gRPC status code becomes, ner-client's exit codes and JSON Lines streaming, concurrent async chunks
and one deadline across retries."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ner_triton.client import AsyncNerClient, NerClient, RetryPolicy, Tls
from ner_triton.client_cli import (
    EXIT_ACCESS_DENIED,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from ner_triton.errors import AccessDeniedError, ClientError, ServiceUnavailableError
from ner_triton.serving.server import ServerSettings, TritonServer, free_ports
from support import TinyBuild

pytestmark = [pytest.mark.integration]

TEXTS = ["Maria Lindqvist visited Madrid.", "ACME rejects Danish plan to import Swiss cheese."]
CLIENT = [str(Path(sys.executable).parent / "ner-client")]


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a server certificate for 127.0.0.1 / localhost, made with openssl here."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: apt-get install openssl")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
             "-subj", "/CN=ner-test-ca", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "1", "-extfile", "san.cnf", cwd=d)  # fmt: skip
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key")


@dataclass(frozen=True)
class TlsServer:
    settings: ServerSettings
    token: str

    @property
    def header(self) -> dict[str, str]:
        # Triton expects the restricted protocol's key with its gRPC prefix.
        return {"triton-grpc-protocol-x-api-token": self.token}


@pytest.fixture(scope="module")
def tls_server(tiny_build: TinyBuild, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """Triton with TLS on gRPC and inference restricted to callers that send the token header."""
    token = secrets.token_hex(8)
    extra = (
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={pki.cert}",
        f"--grpc-server-key={pki.key}",
        f"--grpc-restricted-protocol=inference:x-api-token={token}",
    )
    state = tmp_path_factory.mktemp("tls-triton")
    settings = ServerSettings.on_free_ports(tiny_build.repository, state, model_control_mode="none", extra_args=extra)
    with TritonServer(settings):
        yield TlsServer(settings, token)


def test_tls_and_the_header_reach_triton(tls_server: TlsServer, pki: Pki) -> None:
    url = tls_server.settings.grpc_url
    with NerClient(url, tls=Tls(root_certificates=pki.ca), headers=tls_server.header) as client:
        assert client.is_ready()
        results = client.extract(TEXTS)
    assert len(results) == 2 and all(isinstance(r, list) for r in results)
    # Triton refuses the same call without the header: the header is what got it through.
    # (Triton answers UNAVAILABLE; the client names it for what it is: credentials refused, not overload)
    with NerClient(url, tls=Tls(root_certificates=pki.ca)) as client, pytest.raises(AccessDeniedError) as info:
        client.extract(TEXTS)
    assert "restricted" in str(info.value) and "x-api-token" in str(info.value)
    # Plain text to a TLS port, and TLS with the system CAs (which did not sign this server), never connect.
    for tls in (None, Tls()):
        with (
            NerClient(url, tls=tls, headers=tls_server.header, timeout_s=5) as client,
            pytest.raises(ServiceUnavailableError),
        ):
            client.extract(TEXTS)


def test_async_client_over_tls_sends_chunks_concurrently(tls_server: TlsServer, pki: Pki) -> None:
    in_flight, peak = 0, 0

    class Watched(AsyncNerClient):
        async def _infer(self, part: Any, deadline: Any) -> Any:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await super()._infer(part, deadline)
            finally:
                in_flight -= 1

    texts = [f"{t} ({i})" for i in range(12) for t in TEXTS]

    async def run() -> list[Any]:
        async with Watched(
            tls_server.settings.grpc_url,
            model="ner_fp32",
            max_texts_per_request=2,
            max_concurrent_requests=4,
            tls=Tls(root_certificates=pki.ca),
            headers=tls_server.header,
        ) as client:
            return await client.extract(texts)

    results = asyncio.run(run())
    tls = Tls(root_certificates=pki.ca)
    with NerClient(tls_server.settings.grpc_url, "ner_fp32", tls=tls, headers=tls_server.header) as c:
        expected = c.extract(texts)

    # Spans, not scores: concurrent chunks batch (and pad) differently, which moves scores in the last digits.
    def spans(res: list[Any]) -> list[list[tuple[str, int, int]]]:
        return [[(e.entity, e.start, e.end) for e in ents] for ents in res]

    assert spans(results) == spans(expected), "order kept across concurrent chunks"
    assert 1 < peak <= 4, f"{peak} chunks were in flight at once (12 chunks, at most 4 at a time)"


def test_one_deadline_across_retries() -> None:
    (port,) = free_ports(1)
    retry = RetryPolicy(retries=10_000, base_s=0.05, cap_s=0.2)
    with NerClient(f"127.0.0.1:{port}", timeout_s=1.0, retry=retry) as client:
        start = time.monotonic()
        with pytest.raises(ClientError):
            client.extract(TEXTS)
        elapsed = time.monotonic() - start
    # Each retry with a fresh deadline would keep trying for thousands of attempts.
    assert elapsed < 10.0, f"the call took {elapsed:.1f} s with a 1 s deadline"


# ------------------------------------------------------------------------------------------ ner-client


def _client(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLIENT, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def test_cli_exit_codes(tls_server: TlsServer, pki: Pki, tmp_path: Path) -> None:
    url = tls_server.settings.grpc_url
    headers = tmp_path / "headers.txt"
    headers.write_text(
        f"# the token stays out of the process list\ntriton-grpc-protocol-x-api-token: {tls_server.token}\n"
    )
    tls = ["--root-certificates", str(pki.ca), "-H", f"@{headers}"]
    ok = _client("--url", url, *tls, "--json", *TEXTS)
    assert ok.returncode == EXIT_OK, ok.stderr
    assert [r["text"] for r in json.loads(ok.stdout)] == TEXTS

    (free,) = free_ports(1)
    cases = {
        "no server": (["--url", f"127.0.0.1:{free}", "--timeout", "3", "x"], EXIT_UNAVAILABLE),
        "plain text to TLS": (["--url", url, "--timeout", "3", "x"], EXIT_UNAVAILABLE),
        "unknown model": (["--url", url, *tls, "--model", "nope", "x"], EXIT_REJECTED),
        "empty text": (["--url", url, *tls, " "], EXIT_REJECTED),
        "no token": (["--url", url, "--root-certificates", str(pki.ca), "--retries", "0", "x"], EXIT_ACCESS_DENIED),
        "missing CA file": (["--url", url, "--root-certificates", str(tmp_path / "nope.pem"), "x"], EXIT_ERROR),
        "bad header": (["--url", url, *tls, "-H", "no colon", "x"], EXIT_ERROR),
        "usage": (["--url", url, "--timeout", "soon", "x"], EXIT_USAGE),
    }
    for name, (args, code) in cases.items():
        done = _client(*args)
        assert done.returncode == code, f"{name}: exit {done.returncode}, expected {code}: {done.stderr}"
        assert done.stderr.strip(), f"{name}: no message on stderr"


def test_cli_streams_json_lines_as_they_arrive(tls_server: TlsServer, pki: Pki, tmp_path: Path) -> None:
    headers = tmp_path / "headers.txt"
    headers.write_text(f"triton-grpc-protocol-x-api-token: {tls_server.token}\n")
    cmd = [*CLIENT, "--url", tls_server.settings.grpc_url, "--root-certificates", str(pki.ca), "-H", f"@{headers}",
           "--jsonl", "--input-format", "jsonl"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    answers: list[str] = []

    def read_one() -> None:
        answers.append(proc.stdout.readline())  # type: ignore[union-attr]

    try:
        lines = [
            {"id": "a", "text": TEXTS[0]},
            "this line is not JSON",
            {"id": "c", "text": " "},  # the server refuses an empty text: only this line fails
            {"id": "d", "text": TEXTS[1]},
        ]
        for i, line in enumerate(lines):
            proc.stdin.write((json.dumps(line) if isinstance(line, dict) else line) + "\n")
            proc.stdin.flush()
            # The answer to this line comes while stdin is still open: streaming, not read-all-then-answer.
            reader = threading.Thread(target=read_one)
            reader.start()
            reader.join(60)
            assert not reader.is_alive(), f"no answer to line {i + 1} while stdin stayed open"
        proc.stdin.close()
        code = proc.wait(60)
    finally:
        proc.kill()
    records = [json.loads(a) for a in answers]
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert records[0]["id"] == "a" and "entities" in records[0] and "error" not in records[0]
    assert records[1]["error"]["kind"] == "InvalidInputError"
    assert records[2]["id"] == "c" and records[2]["error"]["kind"] == "InputRejectedError"
    assert records[3]["id"] == "d" and "entities" in records[3]
    assert code == EXIT_REJECTED, "some lines failed"


# ------------------------------------------------------------------------------------------- nginx


@pytest.fixture(scope="module")
def tls_gateway(
    server: ServerSettings, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    """nginx terminating TLS in front of the (plain) test server, allowing only one bearer token, and logging
    the headers it received: (url, token, access log)."""
    nginx = shutil.which("nginx")
    if nginx is None:
        pytest.skip("nginx not found: apt-get install nginx-light (.ci/run does)")
    state = tmp_path_factory.mktemp("gateway")
    (port,) = free_ports(1)
    token = secrets.token_hex(8)
    temp = "\n".join(f"  {k}_temp_path {state}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = state / "nginx.conf"
    conf.write_text(f"""worker_processes 1;
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections 64; }}
http {{
{temp}
  log_format headers '$status "$http_authorization" "$http_x_tenant"';
  access_log {state}/access.log headers;
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {pki.cert};
    ssl_certificate_key {pki.key};
    location / {{
      if ($http_authorization != "Bearer {token}") {{ return 401; }}
      grpc_pass grpc://{server.grpc_url};
    }}
  }}
}}
""")
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(state), "-g", "daemon off;"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while not (state / "nginx.pid").exists():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "nginx exited"
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", token, state / "access.log"
    finally:
        proc.terminate()
        proc.wait(10)


def test_headers_pass_a_tls_gateway_and_a_refusal_is_access_denied(
    tls_gateway: tuple[str, str, Path], pki: Pki
) -> None:
    url, token, access_log = tls_gateway
    tls = Tls(root_certificates=pki.ca)
    headers = {"Authorization": f"Bearer {token}", "X-Tenant": "team-42"}
    with NerClient(url, tls=tls, headers=headers) as client:
        assert len(client.extract(TEXTS)) == 2
    with NerClient(url, tls=tls, headers={"authorization": "Bearer wrong"}) as client, pytest.raises(AccessDeniedError):
        client.extract(TEXTS)
    done = _client("--url", url, "--root-certificates", str(pki.ca), "-H", "authorization: Bearer wrong", "x")
    assert done.returncode == EXIT_ACCESS_DENIED, done.stderr
    time.sleep(0.5)  # nginx writes its access log line after the response
    logged = access_log.read_text().splitlines()
    assert f'200 "Bearer {token}" "team-42"' in logged, logged
    assert '401 "Bearer wrong" "-"' in logged, logged
