"""One request at a time runs in one warm process: ``ner``'s first-choice instance on the real server.

``ner`` has one instance of priority 1 and spares of SPARE_PRIORITY (model_configs.first_choice_groups), and the
server runs Triton's rate limiter (serving.server.RATE_LIMIT), which hands a batch to the free instance of lowest
executions x priority. Without either, Triton's instance threads take turns and every stub gets a third of the
requests - each finding a process that sat idle while the others ran (docs/serving.md, "First-choice instance").
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from ner_triton.client import NerClient
from ner_triton.repository.model_configs import instances_of, parse_pbtxt
from ner_triton.serving.server import ServerSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUESTS = 400


def ner_stubs(server: ServerSettings) -> list[psutil.Process]:
    """The python-backend stubs of ``ner`` under the tritonserver that listens on ``server``'s gRPC port."""
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] != "tritonserver":
            continue
        try:
            ports = {c.laddr.port for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}
            if server.grpc_port not in ports:
                continue
            children = proc.children(recursive=True)
            # a stub's first argument is its model.py: <repository>/ner/<version>/model.py
            return [c for c in children if "stub" in c.name() and Path(c.cmdline()[1]).parent.parent.name == "ner"]
        except psutil.Error:
            continue
    return []


def cpu_seconds(stubs: list[psutil.Process]) -> list[float]:
    return [sum(p.cpu_times()[:2]) for p in stubs]


def test_one_client_runs_on_the_first_choice_instance(server: ServerSettings) -> None:
    cfg = parse_pbtxt((server.repository / "ner" / "config.pbtxt").read_text(encoding="utf-8"))
    stubs = ner_stubs(server)
    assert len(stubs) == instances_of(cfg) >= 2, "ner runs one stub per instance"
    texts = [f"Talks between Peru and the U.K. opened in Madrid on day {i} ." for i in range(REQUESTS)]
    with NerClient(server.grpc_url) as client:
        for text in texts[:8]:  # every instance has run a batch: a spare's executions x priority is no longer 0
            client.extract([text])
        before = cpu_seconds(stubs)
        for text in texts:
            client.extract([text])
        after = cpu_seconds(stubs)
    used = [b - a for a, b in zip(before, after, strict=True)]
    assert sum(used) > 0.1, f"the stubs used {used} CPU seconds for {REQUESTS} requests: too little to tell"
    # taking turns would give each stub ~1/3; the first-choice instance takes all but ~1 in SPARE_PRIORITY
    assert max(used) >= 0.8 * sum(used), f"CPU seconds per ner stub over {REQUESTS} requests, one at a time: {used}"
