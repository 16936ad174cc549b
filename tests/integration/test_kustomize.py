"""
The Kubernetes overlays, rendered as `kubectl apply -k` renders them (kubectl's
own kustomize, offline) and checked against the schemas the API server holds:
every built-in object against Kubernetes' OpenAPI schemas (kubernetes-validate,
strict, so an unknown or misspelt field fails), every KEDA ScaledObject and
prometheus-operator PodMonitor against its CRD's schema (vendored in
deploy/k8s/schemas/, unknown fields refused the same way).

Then what the layout promises: each worker group is one Deployment, one
PodDisruptionBudget and, unless it is the fixed control group, one
ScaledObject, and each of them names the group where it is read; the
ConfigMaps are generated, so an edited file rolls the pods that read it; the
PodMonitor finds every metrics port; Flower serves under the path its Ingress
routes. What the pods run and pass is checked in test_deploy_files.py.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from worker.config import CONTROL_GROUP

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "k8s"
#: the CRDs' openAPIV3Schema, as deploy/k8s/schemas/<group>/<kind>_<version>.json
SCHEMAS = K8S / "schemas"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
#: the oldest Kubernetes the manifests are written for: every field they use exists there
K8S_VERSION = "1.30"
#: the variable that makes a worker Deployment one group's
GROUP_VAR = "LEADRELAY_WORKER_GROUP"
#: the label that tells one group's pods from another's
GROUP_LABEL = "worker-group"


# --- rendering ---


@functools.cache
def _render(overlay: str) -> str:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlays are rendered by its kustomize")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"overlays/{overlay} does not render:\n{done.stderr}"
    return done.stdout


def rendered(overlay: str) -> list[dict[str, Any]]:
    """The objects `kubectl apply -k deploy/k8s/overlays/<overlay>` would send (a fresh copy)."""
    return [doc for doc in yaml.safe_load_all(_render(overlay)) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (doc,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    return doc


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The pod a workload runs (Deployment, Job, CronJob); None for any other object."""
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] | None = spec.get("template", {}).get("spec")
    return pod


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def workers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worker Deployments: those whose container runs `celery -A worker worker`."""
    return [
        doc
        for doc in of_kind(docs, "Deployment")
        if doc["spec"]["template"]["spec"]["containers"][0]["command"][3:4] == ["worker"]
    ]


def group_of(deployment: dict[str, Any]) -> str | None:
    """The worker group a worker Deployment serves; None: every queue."""
    return env_of(deployment["spec"]["template"]["spec"]["containers"][0]).get(GROUP_VAR)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) picks these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def pod_labels(doc: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = doc["spec"]["template"]["metadata"]["labels"]
    return labels


# --- schemas ---


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The vendored schema of a custom resource; fails for a kind none is vendored for."""
    group, version = api_version.split("/")
    path = SCHEMAS / group / f"{kind.lower()}_{version}.json"
    assert path.is_file(), f"no schema for {kind} {api_version}: vendor its CRD's as {path}"
    schema: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return closed(schema)


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """
    The schema with unknown fields refused wherever it lists its fields, as the
    API server's strict field validation does (a CRD's schema only prunes them,
    so a misspelt `minReplicas` would vanish without a word).
    """
    out = dict(schema)
    if "properties" in schema:
        out["properties"] = {name: closed(sub) for name, sub in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = closed(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        out["items"] = closed(schema["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            out[key] = [closed(sub) for sub in schema[key]]
    return out


def problems(doc: dict[str, Any]) -> list[str]:
    """Why the API server would refuse this object, as messages naming the field."""
    where = f"{doc['kind']} {doc['metadata']['name']}"
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: {p}" for p in custom_problems(doc)]
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


def custom_problems(doc: dict[str, Any]) -> list[str]:
    """A custom resource against its CRD's schema (which leaves metadata to the server)."""
    validator = jsonschema.Draft202012Validator(crd_schema(doc["apiVersion"], doc["kind"]))
    out = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", doc["metadata"]["name"]):
        out.append("metadata.name: not a DNS subdomain")
    return out


def is_custom(doc: dict[str, Any]) -> bool:
    """A kind Kubernetes itself does not define: it needs its CRD (and operator) installed."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION)
    except kubernetes_validate.SchemaNotFoundError:
        return True
    return False


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_is_one_the_api_server_accepts(overlay: str) -> None:
    assert [p for doc in rendered(overlay) for p in problems(doc)] == []


def test_the_validators_refuse_what_the_api_server_would() -> None:
    """The checks above have teeth: a misspelt or missing field fails, built-in or custom."""
    docs = rendered("production")
    broken = [copy.deepcopy(d) for d in (workers(docs)[0], *of_kind(docs, "ScaledObject")[:2])]
    broken += copy.deepcopy(of_kind(docs, "PodMonitor"))
    deployment, misspelt, missing, monitor = broken
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    misspelt["spec"]["minReplicas"] = 1
    del missing["spec"]["scaleTargetRef"]
    monitor["spec"]["podMetricsEndpoints"][0]["port"] = 9808
    assert [doc["kind"] for doc in broken if problems(doc)] == [
        "Deployment",
        "ScaledObject",
        "ScaledObject",
        "PodMonitor",
    ]


def test_the_secret_example_is_valid_too() -> None:
    """Not in any overlay (an apply would overwrite the real Secrets), but shown to be copied."""
    docs = [
        d
        for d in yaml.safe_load_all((K8S / "base" / "secret.example.yaml").read_text("utf-8"))
        if d
    ]
    assert [d["kind"] for d in docs] == ["Secret", "Secret"]
    assert [p for doc in docs for p in problems(doc)] == []
    for overlay in OVERLAYS:
        assert not of_kind(rendered(overlay), "Secret"), overlay


def test_the_vendored_crd_schemas_are_json_schemas() -> None:
    paths = sorted(SCHEMAS.glob("*/*.json"))
    assert {p.relative_to(SCHEMAS).as_posix() for p in paths} >= {
        "keda.sh/scaledobject_v1alpha1.json",
        "monitoring.coreos.com/podmonitor_v1.json",
    }
    for path in paths:
        schema = json.loads(path.read_text("utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["properties"]), path


# --- worker groups ---


def scaled_objects_of(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> list[Any]:
    return [
        so
        for so in of_kind(docs, "ScaledObject")
        if so["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    ]


def budgets_of(docs: list[dict[str, Any]], deployment: dict[str, Any]) -> list[Any]:
    return [
        pdb
        for pdb in of_kind(docs, "PodDisruptionBudget")
        if selects(pdb["spec"]["selector"], pod_labels(deployment))
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_worker_group_names_itself_wherever_it_is_read(overlay: str) -> None:
    """Deployment name, label and selector, LEADRELAY_WORKER_GROUP, budget, autoscaler."""
    docs = rendered(overlay)
    for deployment in workers(docs):
        group = group_of(deployment)
        name = deployment["metadata"]["name"]
        if group is None:
            assert name == "leadrelay-worker", name
            continue
        assert name == f"leadrelay-worker-{group}"
        assert deployment["spec"]["selector"]["matchLabels"][GROUP_LABEL] == group, name
        assert pod_labels(deployment)[GROUP_LABEL] == group, name
        assert [b["metadata"]["name"] for b in budgets_of(docs, deployment)] == [name]
        for so in scaled_objects_of(docs, deployment):
            assert so["metadata"]["name"] == name
            (trigger,) = so["spec"]["triggers"]
            assert trigger["type"] == "prometheus", name
            query = trigger["metadata"]["query"]
            assert "leadrelay_backlog" in query, name
            assert re.findall(r'worker_group="([^"]*)"', query) == [group], query


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_worker_deployment_has_its_own_pods_budget_and_autoscaler(overlay: str) -> None:
    """
    No two Deployments select the same pods; each has one disruption budget
    that lets a drain proceed; an autoscaled group keeps at least one replica
    and leaves its count to KEDA; the control group has a fixed count.
    """
    docs = rendered(overlay)
    deployments = of_kind(docs, "Deployment")
    for deployment in workers(docs):
        name = deployment["metadata"]["name"]
        others = [d for d in deployments if d is not deployment]
        assert not any(selects(deployment["spec"]["selector"], pod_labels(d)) for d in others)
        (budget,) = budgets_of(docs, deployment)
        assert budget["spec"].get("maxUnavailable", 0) >= 1, f"{name}: a drain could never evict"
        scaled = scaled_objects_of(docs, deployment)
        if group_of(deployment) == CONTROL_GROUP or not of_kind(docs, "ScaledObject"):
            assert scaled == [], f"{name} is not autoscaled"
            assert deployment["spec"].get("replicas", 1) >= 1
            continue
        (so,) = scaled
        assert so["spec"]["scaleTargetRef"].get("kind", "Deployment") == "Deployment"
        assert 1 <= so["spec"]["minReplicaCount"] <= so["spec"]["maxReplicaCount"], name
        assert "replicas" not in deployment["spec"], f"{name}: an apply would reset KEDA's count"
    for so in of_kind(docs, "ScaledObject"):
        target = so["spec"]["scaleTargetRef"]["name"]
        assert target in {d["metadata"]["name"] for d in workers(docs)}, target
    for budget in of_kind(docs, "PodDisruptionBudget"):
        assert [d for d in deployments if selects(budget["spec"]["selector"], pod_labels(d))]


def test_production_runs_the_control_group_and_autoscales_the_others() -> None:
    docs = rendered("production")
    assert of_kind(docs, "PodMonitor") and of_kind(docs, "Ingress")
    groups = {group_of(d): d for d in workers(docs)}
    assert CONTROL_GROUP in groups
    assert None not in groups, "a worker without a group consumes every queue"
    assert groups[CONTROL_GROUP]["spec"]["replicas"] == 1
    for group, deployment in groups.items():
        if group != CONTROL_GROUP:
            assert scaled_objects_of(docs, deployment), f"{group} is not autoscaled"


def test_single_runs_one_worker_for_every_queue_and_needs_no_crd() -> None:
    docs = rendered("single")
    assert [group_of(d) for d in workers(docs)] == [None]
    assert [doc["kind"] for doc in docs if is_custom(doc)] == []


# --- settings, metrics, Flower ---


def config_map_refs(pod: dict[str, Any]) -> Iterator[str]:
    for v in pod.get("volumes", []):
        if "configMap" in v:
            yield v["configMap"]["name"]
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                yield source["configMapRef"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_maps_are_generated_so_an_edit_rolls_the_pods(overlay: str) -> None:
    docs = rendered(overlay)
    maps = {doc["metadata"]["name"] for doc in of_kind(docs, "ConfigMap")}
    for base in ("leadrelay-env", "leadrelay-destinations"):
        (name,) = [m for m in maps if m.startswith(f"{base}-")]
        assert re.fullmatch(rf"{base}-[a-z0-9]{{10}}", name), f"{name}: no content hash"
    for doc in docs:
        pod = pod_spec(doc)
        if pod is not None:
            refs = set(config_map_refs(pod))
            assert refs, doc["metadata"]["name"]
            assert refs <= maps, f"{doc['metadata']['name']} reads a ConfigMap not rendered"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_metrics_port_is_scraped(overlay: str) -> None:
    """The PodMonitor picks every pod with a metrics port (workers, ledger), and only those."""
    docs = rendered(overlay)
    monitors = of_kind(docs, "PodMonitor")
    if not monitors:
        return
    (monitor,) = monitors
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    with_port = {
        doc["metadata"]["name"]
        for doc in of_kind(docs, "Deployment")
        for c in doc["spec"]["template"]["spec"]["containers"]
        if any(p.get("name") == endpoint["port"] for p in c.get("ports", []))
    }
    chosen = {
        doc["metadata"]["name"]
        for doc in of_kind(docs, "Deployment")
        if selects(monitor["spec"]["selector"], pod_labels(doc))
    }
    assert chosen == with_port
    assert {d["metadata"]["name"] for d in workers(docs)} | {"leadrelay-metrics"} <= chosen


def flower_prefix(docs: list[dict[str, Any]]) -> str:
    (container,) = named(docs, "Deployment", "leadrelay-flower")["spec"]["template"]["spec"][
        "containers"
    ]
    (prefix,) = [a.split("=", 1)[1] for a in container["command"] if a.startswith("--url_prefix=")]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == f"/{prefix}/healthcheck", probe
    return prefix


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_flower_serves_under_the_path_its_ingress_routes(overlay: str) -> None:
    docs = rendered(overlay)
    prefix = flower_prefix(docs)
    assert prefix == "flower"
    service = named(docs, "Service", "leadrelay-flower")
    flower = named(docs, "Deployment", "leadrelay-flower")
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(flower))
    for ingress in of_kind(docs, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["path"] == f"/{prefix}"
                assert path["pathType"] == "Prefix"
                backend = path["backend"]["service"]
                assert backend["name"] == service["metadata"]["name"]
                assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
        hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
        assert hosts <= {h for tls in ingress["spec"]["tls"] for h in tls["hosts"]}, "TLS"
