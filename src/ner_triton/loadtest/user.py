"""The Locust user: one gRPC channel per user (plain or TLS, with headers: .transport), ``ner``, every call recorded.

Import this module only inside Locust (gevent): it initialises gRPC for gevent before any channel
exists, as gRPC's blocking calls would otherwise stall the whole worker.
"""

from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

import grpc.experimental.gevent as grpc_gevent
from locust import User, constant, events, task

grpc_gevent.init_gevent()

import gevent  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402

from ner_triton.client import needs_probe, server_answered, text_inputs, text_rank, translate_error  # noqa: E402
from ner_triton.loadtest import metrics  # noqa: E402
from ner_triton.loadtest.slo import Slo, check  # noqa: E402
from ner_triton.loadtest.texts import TextPool  # noqa: E402
from ner_triton.loadtest.transport import Transport, add_arguments  # noqa: E402
from ner_triton.schema import ENSEMBLE, ENTITIES  # noqa: E402
from ner_triton.settings import default_data  # noqa: E402
from ner_triton.signals import FLUSH_S  # noqa: E402

log = logging.getLogger(__name__)
_POOL: TextPool | None = None
_BEFORE: dict[str, Any] = {}
_QUALITY_BEFORE: metrics.QualitySamples = {}
QUALITY_FLUSH_WAIT_S = FLUSH_S + 0.5  # the model's last counts have reached the metrics port
# Calls started by this process's users: every one must end as a recorded success or failure.
ISSUED = {"calls": 0}


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--ner-model", default=ENSEMBLE, help="ensemble to call")
    parser.add_argument(
        "--ner-data",
        default=os.environ.get("DATA") or default_data(),
        help="texts to send: a text file (one text per line, e.g. loadtest/data/sentences.txt), a directory of "
        "train/valid/test files (any column format) or hub[:<dataset>]",
    )
    parser.add_argument("--document-share", type=float, default=0.1, help="share of requests that are documents")
    parser.add_argument("--timeout-s", type=float, default=30.0, help="client deadline per request")
    parser.add_argument("--slo-p95-ms", type=float, default=Slo.p95_ms)
    parser.add_argument("--slo-p99-ms", type=float, default=Slo.p99_ms)
    parser.add_argument("--slo-error-rate", type=float, default=Slo.max_error_rate)
    parser.add_argument("--triton-metrics-url", default="", help="e.g. http://127.0.0.1:8002/metrics")
    parser.add_argument("--report-prefix", default="", help="write <prefix>_report.{json,md} at the end")
    add_arguments(parser)


def _pool(environment: Any) -> TextPool:
    global _POOL
    if _POOL is None:
        _POOL = TextPool.from_source(environment.parsed_options.ner_data)
    return _POOL


def _is_worker(environment: Any) -> bool:
    from locust.runners import WorkerRunner

    return isinstance(environment.runner, WorkerRunner)


@events.test_start.add_listener
def _on_start(environment: Any, **_: Any) -> None:
    url = environment.parsed_options.triton_metrics_url
    if url and not _is_worker(environment):
        text = metrics.scrape_text(url)
        _BEFORE.update(metrics.parse(text))
        _QUALITY_BEFORE.update(metrics.parse_quality(text))


@events.quitting.add_listener
def _on_quit(environment: Any, **_: Any) -> None:
    if _is_worker(environment):
        return
    opts = environment.parsed_options
    total = environment.stats.total
    slo = Slo(opts.slo_p95_ms, opts.slo_p99_ms, opts.slo_error_rate)
    breaches = check(total, slo)
    triton: dict[str, Any] = {}
    quality: dict[str, Any] = {}
    if opts.triton_metrics_url:
        time.sleep(QUALITY_FLUSH_WAIT_S)  # the model hands its quality counts over every second
        text = metrics.scrape_text(opts.triton_metrics_url)
        triton = metrics.summarize(_BEFORE, metrics.parse(text))
        quality = metrics.quality_summary(_QUALITY_BEFORE, metrics.parse_quality(text))
    if opts.report_prefix:
        from locust.runners import LocalRunner

        from ner_triton.loadtest.report import write_merged_report

        issued = ISSUED["calls"] if isinstance(environment.runner, LocalRunner) else None
        write_merged_report(opts.report_prefix, environment.stats, triton, slo, breaches, issued=issued,
                            quality=quality)  # fmt: skip
    if breaches:
        log.error("SLO breached: %s", "; ".join(breaches))
        environment.process_exit_code = 1
    else:
        log.info("SLO met: p95 <= %.0f ms, p99 <= %.0f ms, errors <= %.2f%%", slo.p95_ms, slo.p99_ms,
                 100 * slo.max_error_rate)  # fmt: skip


PROBE_TIMEOUT_S = 0.5


def server_answers(client: Any, headers: dict[str, str] | None) -> bool:
    """Whether a server answers this user's channel: a health call with a short deadline (an answer, or an error that
    a server sent, counts). An ordinary call, so it yields to the other users like every gRPC call here - unlike
    the client's channel-state future (``client.channel_connected``), which has been seen to hang a user under
    gevent, and with it Locust's exit."""
    try:
        client.is_server_live(headers=headers, client_timeout=PROBE_TIMEOUT_S)
    except grpcclient.InferenceServerException as exc:
        return server_answered(exc)
    return True


class NerGrpcUser(User):
    """Closed-loop user: sends a sentence (or sometimes a long document), waits for the answer, repeats."""

    wait_time = constant(0)
    host = "127.0.0.1:8001"

    def on_start(self) -> None:
        opts = self.environment.parsed_options
        self.model, self.timeout_s, self.document_share = opts.ner_model, opts.timeout_s, opts.document_share
        self.url = self.environment.host or self.host
        self.transport = Transport.from_options(opts)  # TLS and headers, as NerClient takes them
        self.client = grpcclient.InferenceServerClient(**self.transport.client_kwargs(self.url))
        self.rank: int | None = None  # TEXT rank of the model (1: ensemble, 2: the batching one-step ``ner``)
        self.pool = _pool(self.environment)
        self.rng = random.Random()

    def on_stop(self) -> None:
        self.client.close()

    @task
    def extract(self) -> None:
        is_doc = self.rng.random() < self.document_share
        text = self.pool.document(self.rng) if is_doc else self.pool.sentence(self.rng)
        ISSUED["calls"] += 1
        start, size = time.perf_counter(), 0
        error: Exception | None = None
        try:
            if self.rank is None:
                headers = self.transport.call_headers
                meta = self.client.get_model_metadata(
                    self.model, headers=headers, as_json=True, client_timeout=self.timeout_s
                )
                self.rank = text_rank(meta)
            inputs = text_inputs(grpcclient, [text], self.rank)
            result = self.client.infer(
                self.model, inputs, client_timeout=self.timeout_s, headers=self.transport.call_headers
            )
            size = sum(len(x) for x in result.as_numpy(ENTITIES).reshape(-1))
        except grpcclient.InferenceServerException as exc:
            # a message that names the fix; UNAVAILABLE is "shed" when the channel is up, "no server" when not
            connected = server_answers(self.client, self.transport.call_headers) if needs_probe(exc) else None
            error = translate_error(exc, self.url, self.model, self.timeout_s, connected)
        except Exception as exc:  # every failure is recorded, whatever raised it
            error = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name="document" if is_doc else "sentence",
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=size,
            exception=error,
            context={},
        )
        if error is not None:
            gevent.sleep(0.05)  # a failing user backs off a little instead of spinning
