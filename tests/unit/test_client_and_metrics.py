"""Pure parts of the client and the load-test tooling: retry policy, metrics parsing, SLO verdicts."""

from __future__ import annotations

import pytest

from ner_triton.client import NO_RETRY, RetryPolicy, translate_error
from ner_triton.errors import DeadlineExceededError, RequestRejectedError, ServiceUnavailableError
from ner_triton.loadtest.metrics import parse, summarize
from ner_triton.loadtest.slo import Slo


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
    ("status", "message", "kind", "text"),
    [
        ("StatusCode.UNAVAILABLE", "failed to connect to all addresses", ServiceUnavailableError, "make serve"),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", DeadlineExceededError, "raise the timeout"),
        ("StatusCode.NOT_FOUND", "Request for unknown model: 'x'", RequestRejectedError, "check the model name"),
        ("StatusCode.INVALID_ARGUMENT", "invalid input: text 0 is empty", RequestRejectedError, "text 0 is empty"),
    ],
)
def test_errors_are_translated_with_the_fix(status: str, message: str, kind: type, text: str) -> None:
    err = translate_error(FakeError(status, message), "127.0.0.1:8001", "ner", 5.0)
    assert isinstance(err, kind) and text in str(err)


METRICS = """# HELP nv_inference_count Number of inferences performed
nv_inference_count{model="ner_bert_int8",version="1"} 120
nv_inference_exec_count{model="ner_bert_int8",version="1"} 20
nv_inference_request_success{model="ner_bert_int8",version="1"} 100
nv_inference_request_failure{model="ner_bert_int8",version="1"} 0
nv_inference_queue_duration_us{model="ner_bert_int8",version="1"} 300000
nv_inference_compute_infer_duration_us{model="ner_bert_int8",version="1"} 900000
nv_inference_request_duration_us{model="ner_bert_int8",version="1"} 1500000
nv_cpu_utilization 0.5
"""


def test_metrics_are_parsed_and_diffed_per_model() -> None:
    after = parse(METRICS)
    assert after["ner_bert_int8"]["nv_inference_count"] == 120
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
    err = translate_error(FakeError("StatusCode.UNAVAILABLE", message), "127.0.0.1:8001", "ner", 5.0)
    assert isinstance(err, RequestRejectedError) and "overloaded" in str(err)
    assert RetryPolicy().should_retry(FakeError("StatusCode.UNAVAILABLE", message), 0), "overload is retryable"
