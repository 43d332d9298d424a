"""Pure parts of the client and the load-test tooling: retry policy, metrics parsing, SLO verdicts."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ner_triton.client import (
    NO_RETRY,
    Deadline,
    RetryPolicy,
    Tls,
    channel_args,
    check_headers,
    needs_probe,
    status_code,
    translate_error,
)
from ner_triton.client_cli import EXIT_CODES, EXIT_USAGE, batches, exit_code, main, parse_headers, parse_line
from ner_triton.errors import (
    AccessDeniedError,
    ClientError,
    ConfigError,
    DataError,
    DeadlineExceededError,
    InputRejectedError,
    InvalidInputError,
    OverloadedError,
    RequestRejectedError,
    ServiceUnavailableError,
)
from ner_triton.loadtest.metrics import parse, summarize
from ner_triton.loadtest.slo import Slo
from ner_triton.loadtest.texts import TextPool


class FakeError(Exception):
    def __init__(self, status: str, message: str = "boom") -> None:
        super().__init__(message)
        self._status, self._message = status, message

    def status(self) -> str:
        return self._status

    def message(self) -> str:
        return self._message


def test_retry_only_overload_and_restart_statuses() -> None:
    policy = RetryPolicy(retries=2)
    assert policy.should_retry(FakeError("StatusCode.UNAVAILABLE"), 0)
    assert policy.should_retry(FakeError("StatusCode.RESOURCE_EXHAUSTED"), 1)
    assert not policy.should_retry(FakeError("StatusCode.UNAVAILABLE"), 2), "gives up after `retries`"
    assert not policy.should_retry(FakeError("StatusCode.INVALID_ARGUMENT"), 0)
    assert not policy.should_retry(FakeError("StatusCode.DEADLINE_EXCEEDED"), 0)
    assert not NO_RETRY.should_retry(FakeError("StatusCode.UNAVAILABLE"), 0)


def test_backoff_grows_and_is_capped_with_jitter() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=0.5)
    delays = [[policy.delay(a) for _ in range(200)] for a in range(5)]
    assert all(0 <= d <= 0.1 * 2**a + 1e-9 for a, ds in enumerate(delays) for d in ds)
    assert max(delays[4]) <= 0.5 and len(set(delays[0])) > 100, "full jitter: spread, not a constant"


@pytest.mark.parametrize(
    ("status", "connected", "kind", "text"),
    [
        ("StatusCode.UNAVAILABLE", False, ServiceUnavailableError, "make serve"),
        ("StatusCode.UNAVAILABLE", None, ServiceUnavailableError, "make serve"),
        ("StatusCode.UNAVAILABLE", True, OverloadedError, "shed the request"),
        ("StatusCode.RESOURCE_EXHAUSTED", None, OverloadedError, "add capacity"),
        ("StatusCode.DEADLINE_EXCEEDED", None, DeadlineExceededError, "raise the timeout"),
        ("StatusCode.NOT_FOUND", None, RequestRejectedError, "check the model name"),
        ("StatusCode.INVALID_ARGUMENT", None, InputRejectedError, "text 0 is empty"),
        ("StatusCode.UNAUTHENTICATED", None, AccessDeniedError, "credentials"),
        ("StatusCode.PERMISSION_DENIED", None, AccessDeniedError, "credentials"),
        ("StatusCode.INTERNAL", None, RequestRejectedError, "server's log"),
    ],
)
def test_errors_are_chosen_by_status_code_with_the_fix(
    status: str, connected: bool | None, kind: type, text: str
) -> None:
    err = translate_error(FakeError(status, "text 0 is empty"), "127.0.0.1:8001", "ner", 5.0, connected)
    assert type(err) is kind and text in str(err)


def test_a_restricted_protocol_refusal_is_access_denied_not_overload() -> None:
    """Triton refuses a call of a header-restricted protocol with UNAVAILABLE; that is not worth a retry."""
    message = "This protocol is restricted, expecting header 'triton-grpc-protocol-ner-admin-key'"
    err = translate_error(FakeError("StatusCode.UNAVAILABLE", message), "127.0.0.1:8001", "ner", 5.0, True)
    assert type(err) is AccessDeniedError and "send the header" in str(err)


@pytest.mark.parametrize(
    ("status", "message", "probe"),
    [
        ("StatusCode.UNAVAILABLE", "This protocol is restricted, expecting header 'triton-grpc-protocol-x'", False),
        ("StatusCode.UNAVAILABLE", "[request id: <id_unknown>] Exceeds maximum queue size", False),
        ("StatusCode.UNAVAILABLE", "server busy: the bulk lane is taken", False),
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", True),
        ("StatusCode.INVALID_ARGUMENT", "failed to connect to all addresses", False),
    ],
)
def test_the_channel_is_probed_only_for_an_unavailable_its_message_does_not_explain(
    status: str, message: str, probe: bool
) -> None:
    """The Locust user and NerClient probe the channel (a gRPC future: it has hung under gevent) only when the
    message cannot tell a server that answered from no server."""
    assert needs_probe(FakeError(status, message)) is probe


@pytest.mark.parametrize("message", ["Request timeout expired", "failed to connect to all addresses", "deadline"])
def test_the_message_text_does_not_decide_the_error(message: str) -> None:
    """The same text under different status codes gives different errors: the code decides."""
    kinds = {
        code: type(translate_error(FakeError(code, message), "u", "ner", 1.0, True))
        for code in ("StatusCode.UNAVAILABLE", "StatusCode.INVALID_ARGUMENT", "StatusCode.DEADLINE_EXCEEDED")
    }
    assert kinds == {
        "StatusCode.UNAVAILABLE": OverloadedError,
        "StatusCode.INVALID_ARGUMENT": InputRejectedError,
        "StatusCode.DEADLINE_EXCEEDED": DeadlineExceededError,
    }


def test_status_code_parsing() -> None:
    import grpc

    assert status_code(FakeError("StatusCode.UNAVAILABLE")) is grpc.StatusCode.UNAVAILABLE
    assert status_code(FakeError("")) is None
    assert status_code(FakeError("something else")) is None
    assert isinstance(translate_error(FakeError(""), "u", "ner", 1.0), ClientError)


def test_deadline_is_shared_and_bounds_the_retry_wait() -> None:
    deadline = Deadline.after(10.0)
    left = deadline.remaining()
    assert left is not None and 9.0 < left <= 10.0
    assert deadline.allows(1.0) and not deadline.allows(11.0)
    assert Deadline.after(None).remaining() is None and Deadline.after(None).allows(1e9)
    assert not Deadline.after(-1.0).allows(0.0)


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"Authorization": "Bearer x\n"}, "printable ASCII"),
        ({"bad header": "x"}, "cannot be sent"),
        ({"token-bin": "x"}, "cannot be sent"),
        ({"grpc-timeout": "1"}, "cannot be sent"),
    ],
)
def test_bad_headers_are_refused_by_name(headers: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        check_headers(headers)


def test_headers_are_lower_cased_for_grpc() -> None:
    assert check_headers({"Authorization": "Bearer abc", "X-Tenant": "t1"}) == {
        "authorization": "Bearer abc",
        "x-tenant": "t1",
    }


def test_tls_settings_name_a_missing_or_wrong_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both its private key and its certificate chain"):
        Tls(private_key=tmp_path / "k.pem")
    with pytest.raises(ConfigError, match="cannot read the root certificates"):
        Tls(root_certificates=tmp_path / "missing.pem").credentials()
    (tmp_path / "x.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="not a PEM file"):
        Tls(root_certificates=tmp_path / "x.pem").credentials()
    assert ("grpc.ssl_target_name_override", "ner.internal") in channel_args(Tls(server_name="ner.internal"))


def test_header_arguments_and_files(tmp_path: Path) -> None:
    (tmp_path / "h.txt").write_text("# a comment\nAuthorization: Bearer abc:def\n\nx-tenant:  t1 \n")
    assert parse_headers(["X-A: 1", f"@{tmp_path / 'h.txt'}"]) == {
        "x-a": "1",
        "authorization": "Bearer abc:def",
        "x-tenant": "t1",
    }
    with pytest.raises(ConfigError, match="'name: value'"):
        parse_headers(["no-colon"])
    with pytest.raises(ConfigError, match="cannot read the header file"):
        parse_headers([f"@{tmp_path / 'missing'}"])


def test_exit_codes_are_distinct_and_not_argparse_usage() -> None:
    codes = [code for code, _ in EXIT_CODES]
    assert len(codes) == len(set(codes))
    errors = [ServiceUnavailableError("x"), DeadlineExceededError("x"), RequestRejectedError("x"),
              OverloadedError("x"), AccessDeniedError("x"), ConfigError("x")]  # fmt: skip
    mapped = [exit_code(e) for e in errors]
    assert len(set(mapped)) == len(errors) and EXIT_USAGE not in mapped and 0 not in mapped
    assert exit_code(InvalidInputError("x")) == exit_code(RequestRejectedError("x"))


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for code, meaning in EXIT_CODES:
        assert f"{code:>3}  {meaning}" in out


def test_jsonl_input_lines_are_parsed_or_refused_with_the_line_number() -> None:
    assert parse_line(3, "Maria went home.\n", "text").fields == {"text": "Maria went home."}
    ok = parse_line(1, '{"id": 7, "text": "ACME"}', "jsonl")
    assert ok.error is None and ok.fields == {"id": 7, "text": "ACME"}
    for line in ("not json", '{"id": 1}', "[1, 2]", '{"text": 5}'):
        record = parse_line(9, line, "jsonl")
        assert isinstance(record.error, InvalidInputError) and "line 9" in str(record.error)
        assert json.loads(record.as_json())["error"]["kind"] == "InvalidInputError"


def test_stdin_batches_keep_order_and_size() -> None:
    text = "".join(f"line {i}\n" if i % 5 else "\n" for i in range(1, 41))
    got = list(batches(io.StringIO(text), 7))
    assert all(1 <= len(b) <= 7 for b in got)
    flat = [n for b in got for n, _ in b]
    assert flat == [i for i in range(1, 41) if i % 5], "blank lines skipped, numbering kept, order kept"


METRICS = """# HELP nv_inference_count Number of inferences performed
# TYPE nv_inference_count counter
nv_inference_count{model="ner_bert_int8",version="1"} 120
nv_inference_exec_count{model="ner_bert_int8",version="1"} 20
nv_inference_request_success{model="ner_bert_int8",version="1"} 100
nv_inference_request_failure{model="ner_bert_int8",version="1"} 0
nv_inference_queue_duration_us{model="ner_bert_int8",version="1"} 300000
nv_inference_compute_infer_duration_us{model="ner_bert_int8",version="1"} 900000
nv_inference_request_duration_us{model="ner_bert_int8",version="1"} 1500000
nv_inference_exec_count{version="2",model="ner_bert_int8"} 5
nv_inference_count{model="quoted \\"name\\"",version="1"} 3
nv_cpu_utilization 0.5
"""


def test_metrics_are_parsed_and_diffed_per_model() -> None:
    after = parse(METRICS)
    assert after["ner_bert_int8"]["nv_inference_count"] == 120
    assert after['quoted "name"'] == {"nv_inference_count": 3}, "label escaping is the parser's"
    after["ner_bert_int8"]["nv_inference_exec_count"] -= 5  # version 2's executions are summed in
    before = {"ner_bert_int8": {"nv_inference_count": 20, "nv_inference_exec_count": 10,
                                "nv_inference_request_success": 50}}  # fmt: skip
    s = summarize(before, after)["ner_bert_int8"]
    assert s["requests"] == 50 and s["executions"] == 10 and s["avg_batch_size"] == 10.0
    assert s["queue_ms_per_request"] == 6.0 and s["compute_ms_per_request"] == 18.0


def test_slo_breaches_name_the_objective() -> None:
    slo = Slo(p95_ms=100, p99_ms=200, max_error_rate=0.01)
    assert slo.breaches(50, 150, 0.0, 10) == []
    assert slo.breaches(150, 250, 0.02, 10) == [
        "p95 latency 150 ms > 100 ms",
        "p99 latency 250 ms > 200 ms",
        "error rate 2.00% > 1.00%",
    ]
    assert slo.breaches(0, 0, 0, 0) == ["no request completed"]


@pytest.mark.parametrize("message", ["in ensemble 'ner', Request timeout expired", "Exceeds maximum queue size"])
def test_overload_is_a_rejection_not_a_dead_server(message: str) -> None:
    err = translate_error(FakeError("StatusCode.UNAVAILABLE", message), "127.0.0.1:8001", "ner", 5.0, connected=True)
    assert isinstance(err, RequestRejectedError) and isinstance(err, OverloadedError) and message in str(err)
    assert RetryPolicy().should_retry(FakeError("StatusCode.UNAVAILABLE", message), 0), "overload is retryable"


def test_metrics_that_are_not_the_exposition_format_are_refused() -> None:
    with pytest.raises(DataError, match="exposition format"):
        parse('nv_inference_count{model="x" 1\n')


def test_text_pool_from_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "texts.txt"
    path.write_text("First text.\n\n  Second text.  \nThird.\n", encoding="utf-8")
    pool = TextPool.from_source(str(path), doc_sentences=2)
    assert sorted(pool.sentences) == ["First text.", "Second text.", "Third."]
    assert pool.documents == ("First text. Second text.", "Third.")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="no sentence to send"):
        TextPool.from_source(str(tmp_path / "empty.txt"))


def test_the_shipped_load_test_texts_load() -> None:
    root = Path(__file__).resolve().parents[2]
    pool = TextPool.from_source(str(root / "loadtest" / "data" / "sentences.txt"))
    assert len(pool.sentences) >= 50 and pool.documents
