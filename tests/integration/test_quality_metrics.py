"""Quality signals on a real tritonserver: known texts in, the metrics endpoint read back.

The entities per type on the metrics port equal what the client received, the request histograms count every
request, a refused request is counted by reason, the build's baseline is exported as gauges, and a shifted input
(scripts the vocabulary lacks) moves the [UNK] share so that the alert's expression - the real rule file,
evaluated by promtool on series made of the scraped values - crosses its threshold, while English does not."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ner_triton.client import NerClient
from ner_triton.errors import InputRejectedError
from ner_triton.loadtest.metrics import QualitySamples, parse_quality, quality_delta, scrape_text
from ner_triton.serving.server import ServerSettings
from ner_triton.signals import FLUSH_S
from support import TinyBuild

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "monitoring" / "rules"
ENGLISH = [
    "ACME rejects Danish plan to import Swiss cheese.",
    "Maria Lindqvist",
    "The U.K. and Peru talked with Globex Corp in Madrid.",
    "OSLO 2024-03-14",
]
# Ge'ez script and emoji: the MiniLM vocabulary has no pieces for them, so they read as [UNK].
SHIFTED = [
    "ሰላም ለዓለም አዲስ አበባ ኢትዮጵያ ውስጥ ስብሰባ",
    "🚀 🎉 ✨ 🌍 🛰 🧪",
    "ማርያም ሊንድክቪስት ወደ ማድሪድ ሄደች",
]


def _scrape(server: ServerSettings) -> QualitySamples:
    return parse_quality(scrape_text(server.metrics_url))


def _quiet(server: ServerSettings) -> QualitySamples:
    """The metrics once the counts of earlier tests' requests on this server are all handed over: two scrapes a
    flush interval and more apart that agree (the flusher hands counts over every FLUSH_S seconds)."""
    deadline = time.monotonic() + 20
    last = _scrape(server)
    while True:
        time.sleep(FLUSH_S + 0.5)
        now = _scrape(server)
        if quality_delta(last, now, "ner_texts_total", model="ner") == 0:
            return now
        assert time.monotonic() < deadline, "the quality counts kept moving with no requests sent"
        last = now


def _settled(server: ServerSettings, before: QualitySamples, texts: int, rejected: int = 0) -> QualitySamples:
    """The metrics once the flusher has handed over ``texts`` more answered texts and ``rejected`` refusals."""
    deadline = time.monotonic() + 20
    while True:
        after = _scrape(server)
        got = quality_delta(before, after, "ner_texts_total", model="ner")
        refused = quality_delta(before, after, "ner_rejected_requests_total", model="ner")
        if (got, refused) == (texts, rejected):
            return after
        assert got <= texts and refused <= rejected, f"more counted than sent: {got} texts, {refused} refused"
        assert time.monotonic() < deadline, f"metrics show {got}/{texts} texts, {refused}/{rejected} refused"
        time.sleep(0.2)


def test_entity_counts_and_histograms_match_what_the_client_got(server: ServerSettings, repository: Path) -> None:
    before = _quiet(server)
    requests = [ENGLISH, ENGLISH[:1], ENGLISH[1:3], [ENGLISH[3]] * 5]
    with NerClient(server.grpc_url) as client:
        answers = [client.extract(texts) for texts in requests]
        with pytest.raises(InputRejectedError):
            client.extract(["   "])  # whitespace only: refused as invalid input
    sent = sum(len(r) for r in requests)
    after = _settled(server, before, sent, rejected=1)

    def d(name: str, **labels: str) -> float:
        return quality_delta(before, after, name, model="ner", **labels)

    got = Counter(e.entity for answer in answers for text in answer for e in text)
    types = {dict(k[1])["entity"] for k in after if k[0] == "ner_entities_total"}
    assert got.keys() <= types
    assert {t: int(d("ner_entities_total", entity=t)) for t in types} == {t: got.get(t, 0) for t in types}
    for t in types:  # the score histogram holds every entity, and the scores the client got
        assert d("ner_entity_score_count", entity=t) == got.get(t, 0)
        assert d("ner_entity_score_bucket", entity=t, le="+Inf") == got.get(t, 0)
        scores = sum(e.score for a in answers for text in a for e in text if e.entity == t)
        assert d("ner_entity_score_sum", entity=t) == pytest.approx(scores, abs=1e-3)
    for name in ("ner_request_texts", "ner_request_windows", "ner_request_tokens"):
        assert d(f"{name}_count") == len(requests), name  # every answered request, once
        assert d(f"{name}_bucket", le="+Inf") == len(requests), name
    assert d("ner_request_texts_sum") == sent
    assert d("ner_request_windows_sum") >= sent
    assert d("ner_request_tokens_sum") == d("ner_tokens_total") > sent
    assert d("ner_rejected_requests_total", reason="invalid_input") == 1
    assert d("ner_rejected_requests_total", reason="over_budget") == 0

    # The build's baseline, as gauges, equal to what it wrote into served.json.
    served = json.loads((repository / "ner" / "1" / "served.json").read_text(encoding="utf-8"))
    base = served["signals"]
    gauges = {(k[0], dict(k[1]).get("entity"), dict(k[1]).get("quantile")): v for k, v in after.items()
              if k[0].startswith("ner_baseline_") and dict(k[1])["model"] == "ner"}  # fmt: skip
    assert gauges[("ner_baseline_unk_share", None, None)] == pytest.approx(base["unk_share"])
    for etype, share in base["entity_share"].items():
        assert gauges[("ner_baseline_entity_share", etype, None)] == pytest.approx(share)
    for etype, quantiles in base["entity_score"].items():
        for q, score in quantiles.items():
            assert gauges[("ner_baseline_entity_score", etype, q)] == pytest.approx(score)
    assert base["texts"] > 0 and set(base["tokens_per_text"]) == {"0.1", "0.5", "0.9"}


def _phase(server: ServerSettings, texts: list[str], repeat: int) -> tuple[QualitySamples, QualitySamples]:
    before = _quiet(server)
    with NerClient(server.grpc_url) as client:
        for _ in range(repeat):
            client.extract(texts)
    return before, _settled(server, before, len(texts) * repeat)


def _alert_fires(alert: str, series: dict[str, float], baseline: dict[str, float], tmp_path: Path) -> bool:
    """Whether the alert's expression (from the real rule file) selects anything when the scraped increments
    repeat every 15 s for 30 minutes, evaluated by promtool."""
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if not Path(promtool).is_file():
        pytest.skip("promtool is not installed: apt-get install prometheus")
    (rule,) = [r for g in yaml.safe_load((RULES / "ner-quality.yml").read_text())["groups"] for r in g["rules"]
               if r.get("alert") == alert]  # fmt: skip
    labels = '{job="triton",instance="t:8002",model="ner",version="1"}'
    inputs = [{"series": f"{n}{labels}", "values": f"0+{v:g}x130"} for n, v in series.items()]
    inputs += [{"series": f"{n}{labels}", "values": f"{v:g}x130"} for n, v in baseline.items()]
    test = {
        "rule_files": [str(RULES / "ner-quality.yml")],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": inputs,
            "promql_expr_test": [{"expr": f"count({rule['expr']}) or vector(0)", "eval_time": "30m",
                                  "exp_samples": [{"labels": "{}", "value": 1}]}],
        }],
    }  # fmt: skip
    path = tmp_path / f"{alert}.yml"
    path.write_text(yaml.safe_dump(test), encoding="utf-8")
    proc = subprocess.run([promtool, "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 or "got:" in output, output  # a failed expectation, not a broken test file
    return proc.returncode == 0


def test_a_shifted_input_moves_the_unk_share_across_the_alert_threshold(
    server: ServerSettings, tiny_build: TinyBuild, tmp_path: Path
) -> None:
    english = _phase(server, ENGLISH, repeat=4)
    shifted = _phase(server, SHIFTED, repeat=4)
    names = ("ner_tokens_total", "ner_unk_tokens_total")
    share = {}
    alerts = {}
    for phase, (before, after) in (("english", english), ("shifted", shifted)):
        series = {n: quality_delta(before, after, n, model="ner") for n in names}
        base = {"ner_baseline_unk_share": after[("ner_baseline_unk_share", (("model", "ner"), ("version", "1")))]}
        share[phase] = series["ner_unk_tokens_total"] / series["ner_tokens_total"]
        alerts[phase] = _alert_fires("NerInputUnkShareHigh", series, base, tmp_path)
    baseline = base["ner_baseline_unk_share"]
    assert share["english"] <= baseline + 0.02 < share["shifted"], (share, baseline)
    assert alerts == {"english": False, "shifted": True}


def test_the_ensembles_steps_export_their_half_of_the_signals(server: ServerSettings, tiny_build: TinyBuild) -> None:
    """The three-step ensembles: ner_preprocess counts what comes in (texts, sub-tokens, [UNK], refusals),
    ner_postprocess what goes out (entities per type); each under its own model name."""
    from ner_triton.record import BuildReport

    served = BuildReport.load(tiny_build.artifacts / "report.json").served.variant
    before = _scrape(server)
    with NerClient(server.grpc_url, model=f"ner_{served}") as client:
        answers = [client.extract(ENGLISH), client.extract(SHIFTED[:1])]
        with pytest.raises(InputRejectedError):
            client.extract(["   "])
    deadline = time.monotonic() + 20
    while True:
        after = _scrape(server)
        texts = quality_delta(before, after, "ner_texts_total", model="ner_preprocess")
        entities = quality_delta(before, after, "ner_entities_total", model="ner_postprocess")
        got = Counter(e.entity for answer in answers for text in answer for e in text)
        if texts == len(ENGLISH) + 1 and entities == sum(got.values()):
            break
        assert time.monotonic() < deadline, f"{texts} texts, {entities} entities on the metrics port"
        time.sleep(0.2)
    for etype, n in got.items():
        assert quality_delta(before, after, "ner_entities_total", model="ner_postprocess", entity=etype) == n
    assert quality_delta(before, after, "ner_request_texts_count", model="ner_preprocess") == 2
    assert quality_delta(before, after, "ner_unk_tokens_total", model="ner_preprocess") > 0
    assert quality_delta(before, after, "ner_rejected_requests_total", model="ner_preprocess",
                         reason="invalid_input") == 1  # fmt: skip
    assert quality_delta(before, after, "ner_texts_total", model="ner") == 0  # the one-step ner saw none of it
    assert not [k for k in after if k[0] == "ner_entities_total" and dict(k[1])["model"] == "ner_preprocess"]
