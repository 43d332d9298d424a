"""Checks of the deployment files under deploy/.

* deploy/monitoring: the Prometheus config, the recording/alerting rules and their promtool unit tests,
  the Grafana provisioning and dashboard; every PromQL expression anywhere under deploy/ goes through
  promtool's parser.
* deploy/k8s: every kustomize overlay renders, every built-in object validates against the Kubernetes
  1.30 schema (kubernetes-validate, strict), CRD objects are checked by structure, and the pod meets the
  security requirements.
* Nothing under deploy/ holds a secret value.

promtool and kubectl are external binaries; the tests that need one skip, naming how to install it,
where it is missing. The rest (YAML/JSON structure, schema validation of the base files) always runs.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from ner_triton.loadtest.metrics import COUNTERS
from ner_triton.runtime.limits import Limits
from ner_triton.serving.server import RATE_LIMIT

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MONITORING = DEPLOY / "monitoring"
RULES_DIR = MONITORING / "rules"
RULE_FILES = (RULES_DIR / "ner-recording.yml", RULES_DIR / "ner-alerts.yml", RULES_DIR / "ner-quality.yml")
RULE_TESTS = RULES_DIR / "tests.yml"
PROMETHEUS_CONFIG = MONITORING / "prometheus.yml"
GRAFANA = MONITORING / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
K8S = DEPLOY / "k8s"
ADAPTER_RULES = K8S / "extras" / "prometheus-adapter-rules.yaml"
OVERLAYS = ("cpu", "gpu", "keda")
# The base's files as written: the Deployment/Service/HPA checks still run where kubectl is missing.
BASE_FILES = "base-files"
KUSTOMIZATIONS = (
    "base",
    "overlays/cpu",
    "overlays/gpu",
    "overlays/keda",
    "overlays/gpu-object-storage",
    "overlays/cpu-tls",
    "rollout-tls",
    "extras",
    "rollout",
)
OBJECT_STORAGE = "gpu-object-storage"
K8S_VERSION = "1.30.0"
NAMESPACE = "ner"
DEPLOYMENT = "ner-triton"
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}

INSTALL_HINTS = {
    "promtool": "apt-get install prometheus (.ci/run does)",
    "kubectl": "install kubectl >= 1.27, which has kustomize built in (.ci/run does)",
}

# Metric names Triton 2.51 exports (the summaries with --metrics-config=summary_latencies=true).
_SUMMARIES = ("nv_inference_request_summary_us", "nv_inference_queue_summary_us")
TRITON_METRICS = frozenset(
    {
        *COUNTERS,  # the per-model counters the load-test report reads too
        "nv_inference_pending_request_count",
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
        "nv_cpu_utilization",
        "nv_cpu_memory_used_bytes",
        *_SUMMARIES,
        *(f"{s}_sum" for s in _SUMMARIES),
        *(f"{s}_count" for s in _SUMMARIES),
    }
)

# Custom resources kubernetes-validate has no schema for: checked by structure instead.
CRD_API_VERSIONS = {"ScaledObject": "keda.sh/v1alpha1", "ServiceMonitor": "monitoring.coreos.com/v1"}
CLUSTER_SCOPED = {"Namespace"}

# Values for Grafana's variables and prometheus-adapter's template placeholders when checking PromQL.
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
ADAPTER_PLACEHOLDERS = {
    "<<.LabelMatchers>>": 'namespace="ner",pod=~"ner-triton-7d9f-abcde|ner-triton-7d9f-fghij"',
    "<<.GroupBy>>": "pod",
}

# The server command line the Deployment must run (order free).
# The server image's entrypoint (ner_triton.serving.entrypoint) sets `ner`'s instances, then runs tritonserver.
ENTRYPOINT = ["python3", "-m", "ner_triton.serving.entrypoint", "tritonserver"]
REQUIRED_ARGS = (
    "--model-repository=$(MODEL_REPOSITORY)",
    "--model-control-mode=explicit",
    "--load-model=*",
    # Triton 2.51's names (`tritonserver --help`): the admin key guards model control, shared memory, logging, trace.
    "--grpc-restricted-protocol=model-repository,shared-memory,logging,trace:ner-admin-key=$(TRITON_ADMIN_KEY)",
    "--http-restricted-api=model-repository,shared-memory,logging,trace:ner-admin-key=$(TRITON_ADMIN_KEY)",
    "--metrics-config=summary_latencies=true",
    "--allow-cpu-metrics=true",
    RATE_LIMIT,  # the first-choice instance of `ner` (model_configs.first_choice_groups)
    "--exit-timeout-secs=30",
)


# --------------------------------------------------------------------------------------------- helpers


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found: {INSTALL_HINTS[name]}")
    return path


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(proc.args)} exited with {proc.returncode}:\n{output}"
    return output


def _yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def _rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def _recorded_names() -> set[str]:
    return {rule["record"] for path in RULE_FILES for rule in _rules(path) if "record" in rule}


def _dashboards() -> list[tuple[Path, dict[str, Any]]]:
    return [(path, json.loads(path.read_text(encoding="utf-8"))) for path in sorted(DASHBOARDS.glob("*.json"))]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Panels, including those nested in collapsed rows; rows themselves have no queries."""
    for panel in panels:
        if panel.get("type") == "row":
            yield from _panels(panel.get("panels", []))
        else:
            yield panel


def _grafana_substitute(expr: str, variables: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in variables, f"unknown Grafana variable ${name} in {expr!r}"
        return variables[name]

    return re.sub(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))", value, expr)


def _dashboard_variables(dashboard: dict[str, Any]) -> dict[str, str]:
    variables = dict(GRAFANA_VARIABLES)
    for var in dashboard.get("templating", {}).get("list", []):
        variables[var["name"]] = "ner"
    return variables


def _variable_query(var: dict[str, Any]) -> str:
    query = var.get("query")
    return query.get("query", "") if isinstance(query, dict) else str(query or "")


def _dashboard_exprs() -> dict[str, str]:
    """name -> PromQL of every dashboard target and query variable (label_values selectors), substituted."""
    exprs: dict[str, str] = {}
    for _path, dashboard in _dashboards():
        variables = _dashboard_variables(dashboard)
        uid = dashboard["uid"]
        for panel in _panels(dashboard["panels"]):
            for target in panel.get("targets", []):
                exprs[f"dashboard {uid} panel {panel['id']} {target['refId']}"] = _grafana_substitute(
                    target["expr"], variables
                )
        for var in dashboard.get("templating", {}).get("list", []):
            if var.get("type") != "query":
                continue
            query = _variable_query(var)
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query.strip())
            assert match, f"variable {var['name']}: expected label_values(<selector>, <label>), got {query!r}"
            exprs[f"dashboard {uid} variable {var['name']}"] = _grafana_substitute(match.group(1), variables)
    return exprs


def _adapter_config() -> dict[str, Any]:
    (configmap,) = _yaml_docs(ADAPTER_RULES)
    assert configmap["kind"] == "ConfigMap"
    return yaml.safe_load(configmap["data"]["config.yaml"])


def _adapter_exprs() -> dict[str, str]:
    """name -> PromQL of every prometheus-adapter rule, with the template placeholders filled in."""
    exprs: dict[str, str] = {}
    for rule in _adapter_config()["rules"]:
        name = rule["name"]["as"]
        series = rule["seriesQuery"]
        metric = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", series)
        assert metric, f"adapter rule {name}: seriesQuery {series!r} does not start with a metric name"
        query = rule["metricsQuery"].replace("<<.Series>>", metric.group(0))
        for placeholder, value in ADAPTER_PLACEHOLDERS.items():
            query = query.replace(placeholder, value)
        assert "<<" not in query, f"adapter rule {name}: unknown template placeholder in {query!r}"
        exprs[f"adapter {name} seriesQuery"] = series
        exprs[f"adapter {name} metricsQuery"] = query
    return exprs


def _k8s_source_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every object in the YAML files under deploy/k8s, except kustomizations and the patches they name."""
    patches: set[Path] = set()
    kustomizations = sorted(K8S.rglob("kustomization.yaml"))
    for kustomization in kustomizations:
        for patch in yaml.safe_load(kustomization.read_text(encoding="utf-8")).get("patches", []):
            if "path" in patch:
                patches.add((kustomization.parent / patch["path"]).resolve())
    for path in sorted(K8S.rglob("*.yaml")):
        if path in kustomizations or path.resolve() in patches:
            continue
        for doc in _yaml_docs(path):
            yield path, doc


def _keda_exprs() -> dict[str, str]:
    exprs: dict[str, str] = {}
    for path, doc in _k8s_source_docs():
        if doc.get("kind") != "ScaledObject":
            continue
        for i, trigger in enumerate(doc["spec"]["triggers"]):
            if trigger["type"] == "prometheus":
                exprs[f"keda {path.name} {doc['metadata']['name']} trigger {i}"] = trigger["metadata"]["query"]
    return exprs


def _all_exprs() -> dict[str, str]:
    return {**_dashboard_exprs(), **_adapter_exprs(), **_keda_exprs()}


def _validate_builtin(doc: dict[str, Any]) -> None:
    where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    problem = None
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path)
        problem = f"does not validate against Kubernetes {K8S_VERSION}: {e.message} (at {path})"
    except kubernetes_validate.SchemaNotFoundError as e:
        problem = e.message
    if problem is not None:  # outside the except block: no multi-page schema dump in the report
        pytest.fail(f"{where} {problem}")


def _base_services() -> list[dict[str, Any]]:
    return [d for d in _yaml_docs(K8S / "base" / "service.yaml") if d["kind"] == "Service"]


def _check_crd(doc: dict[str, Any]) -> None:
    kind, name = doc["kind"], doc["metadata"]["name"]
    assert doc["apiVersion"] == CRD_API_VERSIONS[kind], f"{kind}/{name}: apiVersion {doc['apiVersion']}"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), f"{kind}: bad name {name!r}"
    spec = doc["spec"]
    if kind == "ScaledObject":
        target = spec["scaleTargetRef"]
        assert target["name"] == DEPLOYMENT, f"ScaledObject {name} scales {target['name']}, not {DEPLOYMENT}"
        assert target.get("kind", "Deployment") == "Deployment"
        assert target.get("apiVersion", "apps/v1") == "apps/v1"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        assert isinstance(spec.get("cooldownPeriod"), int)
        assert spec["triggers"], f"ScaledObject {name} has no triggers"
        for trigger in spec["triggers"]:
            meta = trigger["metadata"]
            assert all(isinstance(v, str) for v in meta.values()), f"trigger metadata values must be strings: {meta}"
            if trigger["type"] == "prometheus":
                assert meta["serverAddress"].startswith("http"), meta
                assert meta["query"].strip()
                assert float(meta["threshold"]) > 0
                assert 0 <= float(meta["activationThreshold"]) < float(meta["threshold"])
                assert trigger.get("metricType", "AverageValue") in {"Value", "AverageValue", "Utilization"}
        behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior", {})
        for direction in ("scaleUp", "scaleDown"):
            assert "stabilizationWindowSeconds" in behavior.get(direction, {}), f"no {direction} window"
    elif kind == "ServiceMonitor":
        selector = spec["selector"]["matchLabels"]
        assert selector, "ServiceMonitor selects every Service"
        assert spec.get("namespaceSelector", {}).get("matchNames", [NAMESPACE]) == [NAMESPACE]
        # Exactly one Service, so that no pod is scraped twice.
        matching = [s for s in _base_services() if selector.items() <= s["metadata"]["labels"].items()]
        assert len(matching) == 1, f"ServiceMonitor selects {len(matching)} Services; one, or pods are scraped twice"
        (service,) = matching
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert spec["endpoints"], "ServiceMonitor has no endpoints"
        for endpoint in spec["endpoints"]:
            assert endpoint.get("path", "/metrics") == "/metrics"
            assert endpoint["port"] in ports, f"ServiceMonitor port {endpoint['port']!r} is not a port of the Service"
            relabel = {r.get("targetLabel"): r.get("replacement") for r in endpoint.get("relabelings", [])}
            assert relabel.get("job") == "triton", "rules and dashboard expect job=triton"


@functools.cache
def _render_cached(kubectl: str, directory: str) -> tuple[dict[str, Any], ...]:
    output = _ok(_run([kubectl, "kustomize", str(K8S / directory)]))
    return tuple(doc for doc in yaml.safe_load_all(output) if doc is not None)


def _render(directory: str) -> list[dict[str, Any]]:
    # Cached per directory: tests must not mutate the objects.
    return list(_render_cached(_tool("kubectl"), directory))


def _objects(variant: str) -> list[dict[str, Any]]:
    """The objects of an overlay as kubectl renders it, or ("base-files") the base's files as written."""
    if variant == BASE_FILES:
        return [
            doc
            for path in sorted((K8S / "base").glob("*.yaml"))
            if path.name != "kustomization.yaml"
            for doc in _yaml_docs(path)
        ]
    return _render(f"overlays/{variant}")


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _triton(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (container,) = (c for c in containers if c["name"] == "triton")
    return container


def _quantity_bytes(quantity: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(quantity))
    assert match and match.group(2) in {*units, ""}, f"bad quantity {quantity!r}"
    return float(match.group(1)) * units.get(match.group(2), 1)


# ------------------------------------------------------------------------------------------ Prometheus


def test_prometheus_config_scrapes_triton_and_loads_only_rule_files() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    assert config["global"]["scrape_interval"]
    assert config["global"]["evaluation_interval"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = [t for sc in jobs["triton"]["static_configs"] for t in sc["targets"]]
    assert targets == ["triton:8002"]
    assert jobs["triton"].get("metrics_path", "/metrics") == "/metrics"
    # Paths are relative to the config file, which is mounted at /etc/prometheus/prometheus.yml.
    matched = {p.resolve() for pattern in config["rule_files"] for p in PROMETHEUS_CONFIG.parent.glob(pattern)}
    assert matched == {p.resolve() for p in RULE_FILES}, "rule_files must load the rules and not tests.yml"


def test_prometheus_config_passes_promtool() -> None:
    output = _ok(_run([_tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG)]))
    for path in RULE_FILES:
        assert path.name in output, f"promtool did not check {path.name}:\n{output}"
    assert RULE_TESTS.name not in output


def test_rules_pass_promtool() -> None:
    output = _ok(_run([_tool("promtool"), "check", "rules", *map(str, RULE_FILES)]))
    assert "SUCCESS" in output


def test_rule_unit_tests_pass() -> None:
    output = _ok(_run([_tool("promtool"), "test", "rules", str(RULE_TESTS)]))
    assert "SUCCESS" in output


def test_rules_define_the_slo_recordings_and_alerts() -> None:
    recorded = _recorded_names()
    for name in (
        "ner:request_rate:rate1m",
        "ner:failure_ratio:rate1m",
        "ner:queue_us_per_request:rate1m",
        "ner:queue_compute_ratio:rate1m",
        "ner:avg_batch_size:rate1m",
        "ner:request_p99_us",
    ):
        assert name in recorded, f"recording rule {name} missing"
    alerts = {rule["alert"]: rule for path in RULE_FILES for rule in _rules(path) if "alert" in rule}
    assert set(alerts) >= {"NerLatencyP99High", "NerFailureRatioHigh", "NerQueueingScaleOut", "TritonDown"}
    for name, rule in alerts.items():
        assert rule.get("for"), f"{name} fires on a single evaluation"
        assert rule["labels"]["severity"] in {"page", "warning", "info"}, name
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), name
    assert 'up{job="triton"} == 0' in alerts["TritonDown"]["expr"]
    # The unit tests exercise the scale-out signal and the failure alert.
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    exprs = {t["expr"] for case in tests for t in case.get("promql_expr_test", [])}
    fired = {t["alertname"] for case in tests for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert "ner:queue_compute_ratio:rate1m" in exprs
    assert "NerFailureRatioHigh" in fired
    # Every quality alert has a recorded-series test that fires it.
    quality = {"NerInputUnkShareHigh", "NerEntityMixDrift", "NerEntityScoreLow", "NerInputRejectionsHigh"}
    assert quality <= set(alerts) and quality <= fired, quality - fired


# ------------------------------------------------------------------------------ PromQL outside the rules


def test_every_promql_expression_parses(tmp_path: Path) -> None:
    """Dashboard targets and variables, adapter rules and KEDA queries, through promtool's parser."""
    promtool = _tool("promtool")
    exprs = _all_exprs()
    rules = [{"record": "check:" + re.sub(r"[^A-Za-z0-9_]+", "_", name), "expr": expr} for name, expr in exprs.items()]
    assert len({r["record"] for r in rules}) == len(rules)
    path = tmp_path / "promql.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "promql", "rules": rules}]}), encoding="utf-8")
    output = _ok(_run([promtool, "check", "rules", str(path)]))
    assert f"{len(rules)} rules found" in output, output


def test_promql_expressions_are_collected_and_use_known_metrics() -> None:
    exprs = _all_exprs()
    assert sum(name.startswith("dashboard") for name in exprs) >= 12
    assert sum(name.startswith("adapter") for name in exprs) >= 2
    assert sum(name.startswith("keda") for name in exprs) >= 1
    recorded = _recorded_names()
    rule_exprs = {f"{p.name} {r.get('record') or r.get('alert')}": r["expr"] for p in RULE_FILES for r in _rules(p)}
    for name, expr in {**exprs, **rule_exprs}.items():
        for metric in re.findall(r"\bnv_[a-z0-9_]+", expr):
            assert metric in TRITON_METRICS, f"{name}: {metric} is not a Triton metric"
        for metric in re.findall(r"\bner:[A-Za-z0-9_:]+", expr):
            assert metric in recorded, f"{name}: {metric} is not a recording rule"
        assert "$" not in expr, f"{name}: unsubstituted variable in {expr!r}"


# ------------------------------------------------------------------------------------------- Grafana


def test_grafana_provisioning() -> None:
    (datasources,) = _yaml_docs(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    (datasource,) = datasources["datasources"]
    assert (datasource["uid"], datasource["type"]) == ("prometheus", "prometheus")
    assert datasource["url"] == "http://prometheus:9090"
    (providers,) = _yaml_docs(GRAFANA / "provisioning" / "dashboards" / "ner.yml")
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_dashboards_are_well_formed() -> None:
    dashboards = _dashboards()
    assert dashboards, f"no dashboards in {DASHBOARDS}"
    uids = [d["uid"] for _, d in dashboards]
    assert len(uids) == len(set(uids)), f"duplicate dashboard uids {uids}"
    assert "ner-triton" in uids
    for path, dashboard in dashboards:
        assert dashboard["schemaVersion"] == 39, path.name
        assert dashboard["title"].strip(), path.name
        panels = list(_panels(dashboard["panels"]))
        assert panels, f"{path.name} has no panels"
        rows = [p for p in dashboard["panels"] if p.get("type") == "row"]
        ids = [p["id"] for p in panels + rows]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids {ids}"
        for panel in panels:
            where = f"{path.name} panel {panel['id']} {panel.get('title')!r}"
            assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}, where
            assert panel["title"].strip(), where
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
            assert panel.get("targets"), f"{where} has no targets"
            ref_ids = [t["refId"] for t in panel["targets"]]
            assert len(ref_ids) == len(set(ref_ids)), f"{where}: duplicate refIds"
            for target in panel["targets"]:
                assert target["expr"].strip(), where
                assert target.get("datasource", {"uid": "prometheus"})["uid"] == "prometheus", where
        (model,) = (v for v in dashboard["templating"]["list"] if v["name"] == "model")
        assert model["datasource"]["uid"] == "prometheus"
        assert _variable_query(model).startswith("label_values(")


def test_dashboard_shows_the_service_signals() -> None:
    (_, dashboard) = next((p, d) for p, d in _dashboards() if d["uid"] == "ner-triton")
    exprs = " ".join(t["expr"] for p in _panels(dashboard["panels"]) for t in p["targets"])
    for needle in (
        "nv_inference_request_success",
        "nv_inference_request_failure",
        'quantile="0.5"',
        'quantile="0.99"',
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_exec_count",
        "nv_inference_pending_request_count",
        "nv_gpu_utilization",
        "nv_cpu_utilization",
        'count(up{job="triton"})',
        'model=~"$model"',
    ):
        assert needle in exprs, f"no panel queries {needle}"


# ---------------------------------------------------------------------------------------- Kubernetes


def test_k8s_source_files_validate() -> None:
    """Schema-checks the manifests as written, so the test means something without kubectl."""
    docs = list(_k8s_source_docs())
    kinds = {doc["kind"] for _, doc in docs}
    assert kinds >= {
        "Namespace",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "ScaledObject",
        "NetworkPolicy",
        "Job",
    }
    for _path, doc in docs:
        if doc["kind"] in CRD_API_VERSIONS:
            _check_crd(doc)
        else:
            _validate_builtin(doc)


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kustomization_renders_and_validates(directory: str) -> None:
    docs = _render(directory)
    assert docs, f"{directory} renders nothing"
    for doc in docs:
        if doc["kind"] in CRD_API_VERSIONS:
            _check_crd(doc)
        else:
            _validate_builtin(doc)
        assert doc["kind"] != "Secret", "secrets are created by hand, never committed"
        if directory != "extras" and doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{doc['kind']} outside namespace {NAMESPACE}"
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"duplicate objects in {directory}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects(overlay: str) -> None:
    docs = _render(f"overlays/{overlay}")
    kinds = sorted(d["kind"] for d in docs)
    autoscaler = "ScaledObject" if overlay == "keda" else "HorizontalPodAutoscaler"
    assert kinds == sorted(
        ["Namespace", "ServiceAccount", "Service", "Service", "PersistentVolumeClaim", "Deployment",
         "PodDisruptionBudget", autoscaler, "NetworkPolicy"]
    )  # fmt: skip
    # Finding 10 of issue 21: a count beside an autoscaler would reset it on every apply.
    assert "replicas" not in _one(docs, "Deployment", DEPLOYMENT)["spec"]
    account = _one(docs, "ServiceAccount", DEPLOYMENT)
    assert account["automountServiceAccountToken"] is False
    assert _one(docs, "Deployment", DEPLOYMENT)["spec"]["template"]["spec"]["serviceAccountName"] == DEPLOYMENT
    pvc = _one(docs, "PersistentVolumeClaim", "ner-model-repository")
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]


@pytest.mark.parametrize("overlay", (BASE_FILES, *OVERLAYS))
def test_pod_security(overlay: str) -> None:
    deployment = _one(_objects(overlay), "Deployment", DEPLOYMENT)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (1000, 1000)
    assert pod["securityContext"]["fsGroup"] == 1000
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(host), host
    assert pod.get("automountServiceAccountToken") is False
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
        assert not sc["capabilities"].get("add"), container["name"]
        assert not sc.get("privileged"), container["name"]
        assert sc.get("runAsNonRoot", True) is True and sc.get("runAsUser", 1000) != 0, container["name"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all("hostPath" not in v for v in volumes.values())
    mounts = {m["mountPath"]: m for m in _triton(deployment)["volumeMounts"]}
    models = volumes[mounts["/models"]["name"]]
    assert mounts["/models"]["readOnly"] is True
    assert models["persistentVolumeClaim"] == {"claimName": "ner-model-repository", "readOnly": True}
    shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
    assert shm["medium"] == "Memory" and _quantity_bytes(shm["sizeLimit"]) >= 2**30
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    # Everything the container can write to is a volume.
    assert set(mounts) == {"/models", "/dev/shm", "/tmp"}


@pytest.mark.parametrize("overlay", (BASE_FILES, *OVERLAYS))
def test_server_container(overlay: str) -> None:
    deployment = _one(_objects(overlay), "Deployment", DEPLOYMENT)
    pod = deployment["spec"]["template"]["spec"]
    triton = _triton(deployment)
    assert triton["image"] == "ner-triton-server:0.1.0"
    assert triton["command"] == ENTRYPOINT
    args = triton["args"]
    assert sorted(args) == sorted(REQUIRED_ARGS), f"server arguments differ: {args}"
    restricted = [a for a in args if a.startswith(("--grpc-restricted-protocol=", "--http-restricted-api="))]
    assert len(restricted) == 2 and all(a.endswith("=$(TRITON_ADMIN_KEY)") for a in restricted)

    env = {e["name"]: e for e in triton["env"]}
    assert env["MODEL_REPOSITORY"]["value"] == "/models", "the volume; components/object-storage sets a URL"
    key = env["TRITON_ADMIN_KEY"]
    assert "value" not in key
    assert key["valueFrom"]["secretKeyRef"] == {"name": "ner-triton-admin", "key": "admin-key"}

    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == PORTS

    def probe(name: str) -> tuple[str, int]:
        get = triton[name]["httpGet"]
        port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        return get["path"], port

    assert probe("readinessProbe") == ("/v2/health/ready", 8000)
    assert probe("livenessProbe") == ("/v2/health/live", 8000)
    assert probe("startupProbe")[1] == 8000
    startup = triton["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "startup probe too impatient for model load"

    exit_timeout = int(next(a for a in args if a.startswith("--exit-timeout-secs=")).split("=")[1])
    pre_stop = triton["lifecycle"]["preStop"]
    sleep = pre_stop["sleep"]["seconds"] if "sleep" in pre_stop else int(pre_stop["exec"]["command"][-1])
    assert sleep >= 5, "preStop sleep too short for endpoints to drain"
    assert pod["terminationGracePeriodSeconds"] > sleep + exit_timeout

    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(PORTS["metrics"])

    resources = triton["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    strategy = deployment["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


@pytest.mark.parametrize("overlay", (BASE_FILES, *OVERLAYS))
def test_services_and_disruption_budget(overlay: str) -> None:
    docs = _objects(overlay)
    deployment = _one(docs, "Deployment", DEPLOYMENT)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["name"] for p in _triton(deployment)["ports"]}

    service = _one(docs, "Service", "ner-triton")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == PORTS
    headless = _one(docs, "Service", "ner-triton-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]}["grpc"] == PORTS["grpc"]
    for svc in (service, headless):
        assert svc["spec"]["selector"].items() <= pod_labels.items(), f"{svc['metadata']['name']} selects no pod"
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in container_ports or port["targetPort"] in PORTS.values()

    pdb = _one(docs, "PodDisruptionBudget", DEPLOYMENT)
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


@pytest.mark.parametrize("overlay", (BASE_FILES, "cpu", "gpu"))
def test_hpa_scales_on_the_adapter_metric(overlay: str) -> None:
    hpa = _one(_objects(overlay), "HorizontalPodAutoscaler", DEPLOYMENT)
    spec = hpa["spec"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": DEPLOYMENT}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 8)
    served = {rule["name"]["as"] for rule in _adapter_config()["rules"]}
    for metric in spec["metrics"]:
        assert metric["type"] == "Pods"
        assert metric["pods"]["metric"]["name"] in served, "the HPA metric is not served by prometheus-adapter"
        assert metric["pods"]["target"]["type"] == "AverageValue"
    assert spec["metrics"][0]["pods"]["metric"]["name"] == "ner_queue_us_per_request"
    for direction in ("scaleUp", "scaleDown"):
        assert "stabilizationWindowSeconds" in spec["behavior"][direction]
    assert (
        spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
        > spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"]
    )


def test_adapter_rules_expose_per_pod_metrics() -> None:
    (configmap,) = _yaml_docs(ADAPTER_RULES)
    assert configmap["metadata"]["namespace"] != NAMESPACE, "the adapter reads its config in its own namespace"
    for rule in _adapter_config()["rules"]:
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        assert re.fullmatch(r"[a-z_]+", rule["name"]["as"])
        query = rule["metricsQuery"]
        for placeholder in ("<<.LabelMatchers>>", "<<.GroupBy>>"):
            assert placeholder in query, f"{rule['name']['as']}: {placeholder} missing"
        assert 'model=~"ner|ner_bert_.*"' in query  # the one-step `ner` (CPU) or the BERT step (GPU)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gpu_resources_only_in_gpu_overlays(overlay: str) -> None:
    deployment = _one(_render(f"overlays/{overlay}"), "Deployment", DEPLOYMENT)
    pod = deployment["spec"]["template"]["spec"]
    resources = _triton(deployment)["resources"]
    if overlay == "cpu":
        assert "nvidia.com/gpu" not in {**resources.get("requests", {}), **resources.get("limits", {})}
        assert not pod.get("tolerations") and not pod.get("nodeSelector")
        return
    assert int(resources["limits"]["nvidia.com/gpu"]) == 1
    assert pod["nodeSelector"], "GPU pods need a GPU node selector"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])

    def shm_bytes(pod_spec: dict[str, Any]) -> float:
        return _quantity_bytes({v["name"]: v for v in pod_spec["volumes"]}["dshm"]["emptyDir"]["sizeLimit"])

    cpu_pod = _one(_render("overlays/cpu"), "Deployment", DEPLOYMENT)["spec"]["template"]["spec"]
    assert shm_bytes(pod) > shm_bytes(cpu_pod), "the GPU overlay should give /dev/shm more room"
    # The memory-backed /dev/shm counts against the memory limit.
    assert _quantity_bytes(resources["limits"]["memory"]) > shm_bytes(pod)


def test_keda_overlay_replaces_the_hpa() -> None:
    docs = _render("overlays/keda")
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    scaled = _one(docs, "ScaledObject")
    spec = scaled["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 8)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    # Finding 8 of issue 21: the Service kube-prometheus-stack's operator creates.
    assert meta["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    assert 'model=~"ner|ner_bert_.*"' in meta["query"]
    assert (
        "nv_inference_queue_duration_us" in meta["query"] and "nv_inference_compute_infer_duration_us" in meta["query"]
    )
    # A ratio is not additive over pods: it must not be divided by the replica count.
    assert trigger["metricType"] == "Value"
    # It runs on the GPU overlay.
    assert "nvidia.com/gpu" in _triton(_one(docs, "Deployment", DEPLOYMENT))["resources"]["limits"]


# ------------------------------------------------------------------------------------------- secrets

_SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "admin key value": re.compile(r"admin-key=(?![\"']?\$[({]|\.\.\.|<)[^\s\"']+"),  # $(VAR), ${VAR} are references
    "credential assignment": re.compile(
        r"(?i)\b(password|passwd|secret|token|api[_-]?key)\b\s*[:=]\s*[\"']?[A-Za-z0-9+/_\-]{16,}"
    ),
    "AWS access key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
}


def test_no_secret_values_under_deploy() -> None:
    files = [p for p in sorted(DEPLOY.rglob("*")) if p.is_file()]
    assert files
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        rel = path.relative_to(ROOT)
        for what, pattern in _SECRET_PATTERNS.items():
            match = pattern.search(text)
            assert match is None, f"{rel} looks like it holds a secret ({what}): {match.group(0)[:40]!r}"
        if (
            path.suffix in {".yaml", ".yml"} and "templates" not in path.relative_to(DEPLOY).parts
        ):  # Helm's are Go templates
            for doc in yaml.safe_load_all(text):
                if isinstance(doc, dict) and doc.get("kind") == "Secret":
                    assert not doc.get("data") and not doc.get("stringData"), f"{rel} commits a Secret with values"


# ------------------------------------------------------------------------------ explicit control, rollout


def test_no_polling_anywhere_in_the_manifests() -> None:
    for path in sorted(K8S.rglob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert "model-control-mode=poll" not in text and "repository-poll-secs" not in text, path


def _rollout_job() -> dict[str, Any]:
    return _one(_render("rollout"), "Job", "ner-rollout")


def test_rollout_job_reaches_every_replica_with_the_admin_key() -> None:
    import tomllib

    job = _rollout_job()
    assert job["metadata"]["namespace"] == NAMESPACE
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[0] in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    target = command[command.index("--dns") + 1]
    host, port = target.rsplit(":", 1)
    headless = _one(_objects(BASE_FILES), "Service", "ner-triton-headless")
    assert host.split(".")[:2] == [headless["metadata"]["name"], NAMESPACE] and host.endswith(".svc.cluster.local")
    assert int(port) in {p["port"] for p in headless["spec"]["ports"] if p["name"] == "grpc"}
    env = {e["name"]: e for e in container["env"]}
    server_env = {e["name"]: e for e in _triton(_one(_objects(BASE_FILES), "Deployment", DEPLOYMENT))["env"]}
    assert env["TRITON_ADMIN_KEY"]["valueFrom"] == server_env["TRITON_ADMIN_KEY"]["valueFrom"]
    assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] <= 2


def test_rollout_pods_are_clients_not_servers() -> None:
    job_labels = _rollout_job()["spec"]["template"]["metadata"]["labels"]
    docs = _objects("gpu")
    for service in (d for d in docs if d["kind"] == "Service"):
        assert not service["spec"]["selector"].items() <= job_labels.items(), "a Service would route to the Job"
    pdb = _one(docs, "PodDisruptionBudget", DEPLOYMENT)
    assert not pdb["spec"]["selector"]["matchLabels"].items() <= job_labels.items()
    policy = _one(docs, "NetworkPolicy", DEPLOYMENT)
    grpc_rule = next(r for r in policy["spec"]["ingress"] if {"port": "grpc", "protocol": "TCP"} in r["ports"])
    pod_selectors = [f["podSelector"]["matchLabels"] for f in grpc_rule["from"] if "podSelector" in f]
    assert any(sel.items() <= job_labels.items() for sel in pod_selectors), "the policy lets the Job in"


def test_rollout_job_pod_security() -> None:
    pod = _rollout_job()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"] and sc["seccompProfile"]["type"] == "RuntimeDefault"


# --------------------------------------------------------------------------------------- NetworkPolicy


@pytest.mark.parametrize("overlay", (BASE_FILES, *OVERLAYS, OBJECT_STORAGE))
def test_network_policy_admits_clients_and_prometheus_only(overlay: str) -> None:
    docs = _objects(overlay)
    deployment = _one(docs, "Deployment", DEPLOYMENT)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    policy = _one(docs, "NetworkPolicy", DEPLOYMENT)["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items(), "the policy selects the server pods"
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"], "default-deny in both directions"
    container_ports = {p["name"] for p in _triton(deployment)["ports"]}
    allowed: dict[str, list[dict[str, Any]]] = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            assert port["port"] in container_ports, f"{port['port']} is not a port of the container"
            allowed.setdefault(port["port"], []).extend(rule["from"])
    assert set(allowed) == {"grpc", "http", "metrics"}
    for peer in allowed["grpc"]:
        labels = peer.get("podSelector", peer.get("namespaceSelector", {})).get("matchLabels", {})
        assert labels == {"ner-triton/client": "true"}, f"gRPC clients are chosen by one label, got {peer}"
        assert not labels.items() <= pod_labels.items(), "the server's own label must not admit clients"
    assert allowed["metrics"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    dns = {(53, "UDP"), (53, "TCP")}
    expected = dns | {(443, "TCP")} if overlay == OBJECT_STORAGE else dns
    assert egress_ports == expected
    assert all("to" not in rule for rule in policy["egress"]), "ports only"


# -------------------------------------------------------------------------- images and object storage


def test_images_point_to_a_registry_through_kustomize(tmp_path: Path) -> None:
    """What docs/deploy-cluster.md tells users to write: an overlay of their own with `images:`."""
    kubectl = _tool("kubectl")
    registry = "registry.example.com/ner"
    for target, image in (("overlays/gpu", "ner-triton-server"), ("rollout", "ner-triton-tools")):
        overlay = tmp_path / target.replace("/", "-")
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "resources": [os.path.relpath(K8S / target, overlay)],
                    "images": [{"name": image, "newName": f"{registry}/{image}", "newTag": "1.2.3"}],
                }
            )
        )
        docs = [d for d in yaml.safe_load_all(_ok(_run([kubectl, "kustomize", str(overlay)]))) if d]
        pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]
        assert pods and all(c["image"] == f"{registry}/{image}:1.2.3" for p in pods for c in p["containers"]), (
            f"{target}: {[c['image'] for p in pods for c in p['containers']]}"
        )
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert [i["name"] for i in base["images"]] == ["ner-triton-server"], "the base names its image for `images:`"


def test_object_storage_overlay_reads_the_repository_url_and_has_no_volume() -> None:
    docs = _render(f"overlays/{OBJECT_STORAGE}")
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    deployment = _one(docs, "Deployment", DEPLOYMENT)
    pod = deployment["spec"]["template"]["spec"]
    triton = _triton(deployment)
    assert "models" not in {v["name"] for v in pod["volumes"]}
    assert "/models" not in {m["mountPath"] for m in triton["volumeMounts"]}
    env = {e["name"]: e for e in triton["env"]}
    ref = env["MODEL_REPOSITORY"]["valueFrom"]["configMapKeyRef"]
    assert "value" not in env["MODEL_REPOSITORY"]
    configmap = _one(docs, "ConfigMap", ref["name"])  # the generated name, hash suffix included
    assert re.match(r"(s3|gs|as)://", configmap["data"][ref["key"]]), configmap["data"]
    assert "--model-repository=$(MODEL_REPOSITORY)" in triton["args"]
    (secret,) = triton["envFrom"]
    assert secret["secretRef"]["optional"] is True, "credentials are optional (IRSA, workload identity)"
    tmp = {v["name"]: v for v in pod["volumes"]}["tmp"]["emptyDir"]
    assert _quantity_bytes(tmp["sizeLimit"]) >= 4 * 2**30, "Triton copies the repository into /tmp"
    assert int(triton["resources"]["limits"]["nvidia.com/gpu"]) == 1, "still the GPU deployment"


# ------------------------------------------------------------------ the CPU deployment serves the one-step ner


def _cpus(quantity: str) -> int:
    """CPUs of a Kubernetes quantity, rounded up as resourceFieldRef with divisor 1 rounds it ("3500m" -> 4)."""
    text = str(quantity)
    return math.ceil(int(text[:-1]) / 1000) if text.endswith("m") else math.ceil(float(text))


def check_one_step_ner_per_cpu(deployment: dict[str, Any], repository: Path, view: Path) -> int:
    """The server of ``deployment``, started as Kubernetes starts it on a python-layout repository (the one the
    build writes, `ner` = the one-step python model): the entrypoint gives `ner` one instance per CPU of the
    container's limit, which equals its request. Returns that count."""
    from ner_triton.repository.model_configs import RepositorySettings, instances_of, parse_pbtxt
    from ner_triton.repository.render import write_configs
    from ner_triton.serving.entrypoint import rewrite_command
    from ner_triton.variants import Layout

    triton = _triton(deployment)
    assert triton["command"] == ENTRYPOINT
    resources = triton["resources"]
    assert resources["requests"]["cpu"] == resources["limits"]["cpu"], "one whole CPU per instance"
    env = {e["name"]: e for e in triton["env"]}
    ref = env["NER_INSTANCES"]["valueFrom"]["resourceFieldRef"]
    assert ref == {"containerName": "triton", "resource": "limits.cpu", "divisor": "1"}
    count = _cpus(resources["limits"]["cpu"])

    write_configs(RepositorySettings(ner_instances=None), repository, Layout.PYTHON)  # as written elsewhere: 2
    values = {"MODEL_REPOSITORY": str(repository), "TRITON_ADMIN_KEY": "k"}
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in triton["args"]]
    command = rewrite_command([*ENTRYPOINT[3:], *args], {"NER_INSTANCES": str(count), "NER_REPOSITORY_VIEW": str(view)})
    served = Path(next(a for a in command if a.startswith("--model-repository=")).split("=", 1)[1])
    ner = parse_pbtxt((served / "ner" / "config.pbtxt").read_text())
    assert ner.backend == "python" and not ner.HasField("ensemble_scheduling"), "`ner` is the one-step python model"
    assert instances_of(ner) == count + Limits().bulk_slots  # one per CPU, one per bulk slot
    return count


def test_cpu_overlay_serves_the_one_step_ner_per_cpu(tmp_path: Path) -> None:
    """Issue 21: kustomize's cpu overlay runs the python layout's `ner` with one instance per CPU of the pod."""
    deployment = _one(_render("overlays/cpu"), "Deployment", DEPLOYMENT)
    assert check_one_step_ner_per_cpu(deployment, tmp_path / "models", tmp_path / "view") == 4
    # The HPA scales pods of that size; the capacity planner plans them with --instances (docs/scaling.md).
    assert _one(_render("overlays/cpu"), "HorizontalPodAutoscaler", DEPLOYMENT)["spec"]["minReplicas"] >= 1


def test_cloud_metadata_egress_is_opt_in() -> None:
    """Finding 1 of issue 21: object storage gets DNS + HTTPS; the metadata endpoints only with the component."""
    plain = _one(_render(f"overlays/{OBJECT_STORAGE}"), "NetworkPolicy", DEPLOYMENT)["spec"]["egress"]
    assert not any("to" in rule for rule in plain)
    assert {p["port"] for rule in plain for p in rule["ports"]} == {53, 443}
    metadata = _yaml_docs(K8S / "components" / "cloud-metadata" / "networkpolicy.yaml")[0]["spec"]["egress"]
    cidrs = {b["ipBlock"]["cidr"] for rule in metadata for b in rule.get("to", [])}
    assert cidrs == {"169.254.169.254/32", "169.254.170.23/32", "fd00:ec2::23/128"}
    assert metadata[:2] == plain, "the component keeps DNS and HTTPS"


def test_tls_overlay_serves_grpc_over_tls_and_the_rollout_verifies_it() -> None:
    """Issue 20: gRPC over TLS from the Secret ner-triton-tls (Triton's own --grpc-use-ssl); the rollout Job checks
    the pods' certificate with the Secret's CA, so the admin key never travels in clear."""
    docs = _render("overlays/cpu-tls")
    deployment = _one(docs, "Deployment", DEPLOYMENT)
    triton = _triton(deployment)
    args = triton["args"]
    assert args[: len(REQUIRED_ARGS)] == list(_triton(_one(_render("overlays/cpu"), "Deployment", DEPLOYMENT))["args"])
    assert args[len(REQUIRED_ARGS) :] == [
        "--grpc-use-ssl=true",
        "--grpc-server-cert=/tls/tls.crt",
        "--grpc-server-key=/tls/tls.key",
    ]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "ner-triton-tls"
    assert {"name": "tls", "mountPath": "/tls", "readOnly": True} in triton["volumeMounts"]
    for service in ("ner-triton", "ner-triton-headless"):
        grpc = next(p for p in _one(docs, "Service", service)["spec"]["ports"] if p["name"] == "grpc")
        assert grpc.get("appProtocol") != "kubernetes.io/h2c", "TLS is not cleartext HTTP/2"
    (job,) = _render("rollout-tls")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "--root-certificates=/tls/ca.crt" in container["command"]
    assert "--tls-server-name=ner-triton.ner.svc" in container["command"]
    secret = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")["secret"]
    assert secret["items"] == [{"key": "ca.crt", "path": "ca.crt"}], "the Job gets the CA, not the server's key"


@pytest.mark.parametrize("name", ["client-pod.yaml", "writer-pod.yaml"])
def test_tool_pods_meet_the_restricted_pod_security_standard(name: str) -> None:
    """Finding 2 of issue 21: `kubectl run` pods are refused in `ner` (restricted); these are admitted: the
    checks of the restricted profile (non-root, no escalation, all capabilities dropped, RuntimeDefault seccomp)."""
    (pod,) = _yaml_docs(K8S / "tools" / name)
    _validate_builtin(pod)
    spec = pod["spec"]
    assert pod["metadata"]["namespace"] == NAMESPACE
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in spec["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"]
        assert not sc["capabilities"].get("add") and not sc.get("privileged")
        assert ":" in container["image"] and not container["image"].endswith(":latest")
    assert all("hostPath" not in v for v in spec.get("volumes", []))
    if name == "client-pod.yaml":
        assert pod["metadata"]["labels"]["ner-triton/client"] == "true", "let through by the NetworkPolicy"
