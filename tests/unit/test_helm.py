"""The Helm chart (deploy/helm/ner-triton) renders the same objects as the kustomize overlays.

Rendered and linted by Helm's own Go engine, through helm-python-sdk (the Helm v4 SDK as a shared library:
no helm binary installs here - not from Debian, PyPI or npm); each value set is compared object by object with
`kubectl kustomize` of the matching overlay, and validated against the Kubernetes 1.30 schema.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk not installed (the dev extra installs it on Linux x86_64)"
)

from test_deploy import (  # noqa: E402  (after the skip: the same helpers and schema checks as the kustomize tests)
    CRD_API_VERSIONS,
    K8S_VERSION,
    _check_crd,
    _render,
    _tool,
    check_one_step_ner_per_cpu,
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "ner-triton"
NAMESPACE = "ner"
# value files (in order) -> the kustomize overlay that deploys the same objects
VARIANTS = {
    "cpu": [],
    "gpu": ["values-gpu.yaml"],
    "keda": ["values-gpu.yaml", "values-keda.yaml"],
    "gpu-object-storage": ["values-gpu.yaml", "values-object-storage.yaml"],
    "cpu-tls": ["values-tls.yaml"],
}
HELM_LABELS = {
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}
HOOK = "helm.sh/hook"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of value files: maps merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _values(files: list[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in files:
        values = _merge(values, yaml.safe_load((CHART / name).read_text(encoding="utf-8")))
    return _merge(values, extra or {})


def render(files: list[str], extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(_values(files, extra), name="ner", namespace=NAMESPACE, is_install=True)
    objects = (text for name, text in manifests.items() if not name.endswith("NOTES.txt"))  # NOTES: text for people
    return [doc for text in objects for doc in yaml.safe_load_all(text) if doc]


def _sort_named(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _sort_named(v) for k, v in node.items()}
    if isinstance(node, list):
        items = [_sort_named(v) for v in node]
        if items and all(isinstance(v, dict) and "name" in v for v in items):
            return sorted(items, key=lambda v: str(v["name"]))
        return items
    return node


def normalize(doc: dict[str, Any]) -> dict[str, Any]:
    """What may differ between the two tools: Helm's release labels and hook annotations, kustomize's namespace
    field and ConfigMap hash suffix, the order of lists of named items (a strategic merge reorders them)."""
    doc = copy.deepcopy(doc)
    for meta in (doc["metadata"], doc.get("spec", {}).get("template", {}).get("metadata", {})):
        for key in HELM_LABELS:
            meta.get("labels", {}).pop(key, None)
        meta.get("annotations", {}).pop(HOOK, None)
        meta.get("annotations", {}).pop("helm.sh/hook-delete-policy", None)
        if "annotations" in meta and not meta["annotations"]:
            del meta["annotations"]
        meta.pop("namespace", None)
    for trigger in doc.get("spec", {}).get("triggers", []):
        if "query" in trigger.get("metadata", {}):  # PromQL: whitespace is insignificant
            trigger["metadata"]["query"] = " ".join(trigger["metadata"]["query"].split())
    text = re.sub(r"ner-model-repository-[a-z0-9]{10}\b", "ner-model-repository", yaml.safe_dump(doc))
    return _sort_named(yaml.safe_load(text))  # type: ignore[no-any-return]


def _by_key(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    normalized = [normalize(d) for d in docs]
    return {(d["kind"], d["metadata"]["name"]): d for d in normalized}


def test_chart_lints_strictly() -> None:
    for files in VARIANTS.values():
        report = helm.lint(str(CHART), _values(files), strict=True, kube_version=f"v{K8S_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_chart_renders_the_same_objects_as_the_overlay(variant: str) -> None:
    _tool("kubectl")
    rendered = render(VARIANTS[variant])
    chart = _by_key([d for d in rendered if HOOK not in d["metadata"].get("annotations", {})])
    overlay = _by_key([d for d in _render(f"overlays/{variant}") if d["kind"] != "Namespace"])
    assert set(chart) == set(overlay), (
        f"objects differ: only Helm {set(chart) - set(overlay)}, only kustomize {set(overlay) - set(chart)}"
    )
    for key, obj in overlay.items():
        assert chart[key] == obj, f"{variant}: {key} differs:\nhelm:      {chart[key]}\nkustomize: {obj}"


@pytest.mark.parametrize(("files", "rollout"), [([], "rollout"), (["values-tls.yaml"], "rollout-tls")])
def test_chart_rollout_hook_is_the_rollout_job(files: list[str], rollout: str) -> None:
    _tool("kubectl")
    (hook,) = [d for d in render(files) if HOOK in d["metadata"].get("annotations", {})]
    assert hook["metadata"]["annotations"][HOOK] == "post-upgrade"
    (job,) = _render(rollout)
    assert normalize(hook) == normalize(job)


@pytest.mark.parametrize("variant", VARIANTS)
def test_chart_objects_validate(variant: str) -> None:
    for doc in render(VARIANTS[variant]):
        if doc["kind"] in CRD_API_VERSIONS:
            _check_crd(doc)
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {e.message}")
        assert doc["kind"] != "Secret", "secrets are created by hand"


def test_chart_images_come_from_values() -> None:
    docs = render(
        ["values-gpu.yaml"],
        {
            "image": {"repository": "registry.example.com/ner/ner-triton-server", "tag": "1.2.3"},
            "rollout": {"image": {"repository": "registry.example.com/ner/ner-triton-tools", "tag": "1.2.3"}},
        },
    )
    images = sorted(
        c["image"]
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    )
    assert images == [
        "registry.example.com/ner/ner-triton-server:1.2.3",
        "registry.example.com/ner/ner-triton-tools:1.2.3",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"autoscaling": {"mode": "vpa"}}, "autoscaling.mode"),
        ({"modelRepository": {"url": "http://bucket/models"}}, "s3://, gs:// or as://"),
    ],
)
def test_chart_refuses_bad_values_by_name(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render([], extra)


def test_chart_without_network_policy_or_hook() -> None:
    kinds = {d["kind"] for d in render([], {"networkPolicy": {"enabled": False}, "rollout": {"onUpgrade": False}})}
    assert "NetworkPolicy" not in kinds and "Job" not in kinds and "Deployment" in kinds


def test_chart_defaults_serve_the_one_step_ner_per_cpu(tmp_path: Path) -> None:
    """Issue 21: the Helm defaults run the python layout's `ner` with one instance per CPU of the pod; the
    `instances` value sets the count instead; no replica count beside the autoscaler (finding 10)."""
    deployment = next(d for d in render([]) if d["kind"] == "Deployment")
    assert check_one_step_ner_per_cpu(deployment, tmp_path / "models", tmp_path / "view") == 4
    assert "replicas" not in deployment["spec"]
    fixed = next(d for d in render([], {"instances": 3, "autoscaling": {"mode": "none"}}) if d["kind"] == "Deployment")
    env = {e["name"]: e for e in fixed["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["NER_INSTANCES"] == {"name": "NER_INSTANCES", "value": "3"}
    assert fixed["spec"]["replicas"] == 2


def test_chart_service_account_and_metadata_egress_are_values() -> None:
    """Finding 1 of issue 21: a ServiceAccount for workload-identity annotations; metadata egress opt-in, the same
    rule as deploy/k8s/components/cloud-metadata."""
    annotations = {"eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/ner"}
    docs = render(["values-object-storage.yaml"], {"serviceAccount": {"annotations": annotations}})
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert account["metadata"]["annotations"] == annotations and account["automountServiceAccountToken"] is False
    egress = next(d for d in docs if d["kind"] == "NetworkPolicy")["spec"]["egress"]
    assert not any("to" in rule for rule in egress)
    opened = render(["values-object-storage.yaml"], {"networkPolicy": {"cloudMetadataEgress": True}})
    egress = next(d for d in opened if d["kind"] == "NetworkPolicy")["spec"]["egress"]
    component = yaml.safe_load((ROOT / "deploy/k8s/components/cloud-metadata/networkpolicy.yaml").read_text())
    assert egress == component["spec"]["egress"]


def test_chart_tells_helm_to_wait_for_the_rollout_hook() -> None:
    """Finding 7 of issue 21: the hook may run rollout.deadlineSeconds; `helm upgrade` waits 5 min by default.
    The chart's notes and every `helm upgrade` in the docs give a --timeout longer than the deadline."""
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(_values([]), name="ner", namespace=NAMESPACE, is_install=True)
    (notes,) = [text for name, text in manifests.items() if name.endswith("NOTES.txt")]
    deadline = yaml.safe_load((CHART / "values.yaml").read_text())["rollout"]["deadlineSeconds"]
    (hook,) = [d for d in render([]) if HOOK in d["metadata"].get("annotations", {})]
    assert hook["spec"]["activeDeadlineSeconds"] == deadline
    timeouts = [int(m) for m in re.findall(r"--timeout (\d+)m", notes)]
    assert timeouts and all(60 * t > deadline for t in timeouts), notes
    docs = [*(ROOT / "docs").glob("*.md"), *(ROOT / "deploy").rglob("README.md")]
    for path in docs:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")  # shell continuation lines joined
        for command in re.findall(r"helm upgrade (?:--install )?\w+ \S*deploy/helm[^\n]*", text):
            found = re.search(r"--timeout (\d+)m", command)
            assert found and 60 * int(found.group(1)) > deadline, f"{path.name}: {command!r} needs --timeout"
