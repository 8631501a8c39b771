"""Deploy files pass the offline validators (no Docker engine or cluster runs here).

Kubernetes: every overlay is rendered with `kubectl kustomize` (kustomize v5 built into kubectl);
built-in kinds are validated strictly by kubernetes-validate (schemas of 1.30, the oldest version
the manifests support, and of its newest), custom resources (KEDA, External Secrets) by jsonschema
against the CRD schemas vendored in deploy/schemas. On top of the schemas, the tests check what
the schemas cannot: default-deny with explicit egress, secrets as files, the one admin, the queue
names the adapters really use. Compose: `docker-compose config -q`, with and without the kafka
profile, plus the same kind of checks on its resolved form.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from contrackt.adapters.queue import kafka as kafka_queue
from contrackt.adapters.queue.redis_streams import RedisStreamsQueue
from contrackt.api.routes import health
from contrackt.metrics import HTTP_REQUESTS
from contrackt.secret_files import FORBIDDEN_MODE, SECRET_SETTINGS
from contrackt.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = DEPLOY / "schemas"
BIN = Path(sys.executable).parent

OVERLAYS = ["production", "production-kafka", "production-gpu"]
# Components no overlay uses, rendered on top of production so that they are validated too.
EXTRA_COMPONENTS = ["receipt-key-secret", "api-hpa-cpu-only"]
ALL = [*OVERLAYS, "production+extras"]
KUBERNETES_VERSIONS = ["1.30", kubernetes_validate.utils.latest_version()]
NAMESPACES = {"contrackt-api", "contrackt-workers", "contrackt-data", "contrackt-monitoring"}
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject-keda-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "triggerauthentication-keda-v1alpha1.json",
    ("external-secrets.io/v1", "ExternalSecret"): "externalsecret-external-secrets-v1.json",
    ("external-secrets.io/v1", "ClusterSecretStore"): "clustersecretstore-external-secrets-v1.json",
}
# Trigger metadata is a free map in the CRD: the names each scaler reads, from KEDA v2.20.2's
# pkg/scalers/redis_scaler.go and kafka_scaler.go (`keda:"name=..."` tags, triggerMetadata).
KEDA_TRIGGER_METADATA = {
    "redis": {
        "address", "addresses", "host", "hosts", "port", "ports", "username", "password", "listName",
        "listLength", "activationListLength", "databaseIndex", "enableTLS", "unsafeSsl", "sentinelMaster",
        "sentinelUsername", "sentinelPassword",
    },
    "kafka": {
        "bootstrapServers", "consumerGroup", "topic", "partitionLimitation", "lagThreshold",
        "activationLagThreshold", "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
        "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions",
        "version", "tls", "unsafeSsl", "sasl", "saslTokenProvider",
    },
}  # fmt: skip
METADATA_ENDPOINTS = [ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")]


def tool(name: str) -> str:
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail(f"{name} is not installed: scripts/install.sh installs it (kubectl: the machine image)")
    return found


def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=cwd)


# ---------------------------------------------------------------- rendering and validation


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    if overlay == "production+extras":
        with tempfile.TemporaryDirectory() as tmp:
            return rendered_dir(extras_kustomization(Path(tmp)))
    return rendered_dir(K8S / overlay)


def extras_kustomization(here: Path) -> Path:
    """production plus EXTRA_COMPONENTS, in `here` (kustomize refuses absolute paths: relative ones)."""
    rel = Path(os.path.relpath(K8S, here))
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [str(rel / "production")],
        "components": [str(rel / "components" / c) for c in EXTRA_COMPONENTS],
    }
    (here / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return here


def rendered_dir(path: Path) -> tuple[dict[str, Any], ...]:
    out = run(tool("kubectl"), "kustomize", str(path))
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


@cache
def crd_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)  # type: ignore[no-any-return]


def problems(doc: dict[str, Any], version: str) -> list[str]:
    """Why `doc` is invalid (empty: valid). Custom resources against the vendored CRD schemas."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    key = (doc.get("apiVersion"), doc.get("kind"))
    if key in CRD_SCHEMAS:
        validator = crd_validator(*key)  # type: ignore[arg-type]
        return [f"{name}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{name}: {'/'.join(map(str, e.path))}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [f"{name}: no schema ({e.message}): vendor its CRD schema into deploy/schemas"]
    return []


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def pod_specs(docs: tuple[dict[str, Any], ...]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d, d["spec"]["template"]["spec"]


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def configmap_env(docs: tuple[dict[str, Any], ...], container: dict[str, Any], namespace: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            cm = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == source["configMapRef"]["name"]]
            (cm_doc,) = [d for d in cm if d["metadata"]["namespace"] == namespace]
            values.update(cm_doc["data"])
    return {**values, **env_of(container)}


# ---------------------------------------------------------------- the validators themselves


def test_dockerfile_passes_hadolint() -> None:
    out = run(tool("hadolint"), str(DEPLOY / "Dockerfile"))
    assert out.returncode == 0, out.stdout + out.stderr


def test_yaml_is_clean() -> None:
    out = run(tool("yamllint"), "--strict", "-c", str(DEPLOY / ".yamllint"), str(DEPLOY))
    assert out.returncode == 0, out.stdout + out.stderr


def test_base_files_validate_strictly_with_the_cli() -> None:
    manifests = sorted(str(p) for p in (K8S / "base").glob("*.yaml") if p.name != "kustomization.yaml")
    out = run(tool("kubernetes-validate"), "--strict", "-k", "1.30", *manifests)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") >= 30


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", ALL)
def test_every_overlay_renders_and_every_resource_validates(overlay: str, version: str) -> None:
    docs = rendered(overlay)
    found = [p for doc in docs for p in problems(doc, version)]
    assert [] == found
    kinds = {d["kind"] for d in docs}
    assert {"ScaledObject", "ExternalSecret", "ClusterSecretStore", "Deployment", "Job"} <= kinds


def test_the_base_renders_alone() -> None:
    docs = rendered_dir(K8S / "base")
    assert NAMESPACES == {d["metadata"]["name"] for d in of_kind(docs, "Namespace")}
    assert [] == [p for doc in docs for p in problems(doc, "1.30")]


def scaled_object() -> dict[str, Any]:
    return json.loads(json.dumps(one(rendered("production"), "ScaledObject", "contrackt-worker")))


def test_the_crd_schemas_catch_an_unknown_field_and_a_wrong_type() -> None:
    assert [] == problems(scaled_object(), "1.30")
    unknown = scaled_object()
    unknown["spec"]["maxReplicas"] = 50  # HPA's name, not KEDA's
    assert any("'maxReplicas' was unexpected" in p for p in problems(unknown, "1.30"))
    nested = scaled_object()
    nested["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["window"] = 300
    assert any("'window' was unexpected" in p for p in problems(nested, "1.30"))
    wrong_type = scaled_object()
    wrong_type["spec"]["minReplicaCount"] = "2"
    assert any("minReplicaCount" in p and "not of type 'integer'" in p for p in problems(wrong_type, "1.30"))
    number = scaled_object()
    number["spec"]["triggers"][0]["metadata"]["listLength"] = 4  # KEDA wants every value as a string
    assert any("listLength" in p and "not of type 'string'" in p for p in problems(number, "1.30"))
    no_type = scaled_object()
    del no_type["spec"]["triggers"][0]["type"]
    assert any("'type' is a required property" in p for p in problems(no_type, "1.30"))
    wrong_api = scaled_object()
    wrong_api["apiVersion"] = "keda.sh/v1"
    assert any("no schema" in p for p in problems(wrong_api, "1.30"))


def test_the_external_secret_schema_catches_an_unknown_field() -> None:
    es = json.loads(json.dumps(one(rendered("production"), "ExternalSecret", "contrackt-api")))
    assert [] == problems(es, "1.30")
    es["spec"]["data"][0]["remoteRef"]["path"] = "contrackt/production"
    assert any("'path' was unexpected" in p for p in problems(es, "1.30"))
    store = json.loads(json.dumps(one(rendered("production"), "ClusterSecretStore", "contrackt")))
    store["spec"]["provider"]["aws"]["service"] = 3
    assert any("service" in p for p in problems(store, "1.30"))


def test_built_in_kinds_are_validated_strictly() -> None:
    deployment = json.loads(json.dumps(one(rendered("production"), "Deployment", "contrackt-api")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    assert any("httpGett" in p for p in problems(deployment, "1.30"))


def test_vendored_schemas_say_where_they_came_from() -> None:
    for name in CRD_SCHEMAS.values():
        comment = json.loads((SCHEMAS / name).read_text())["$comment"]
        assert "scripts/crd_schema.py" in comment and "sha256 " in comment
        assert "kedacore/keda@v2.20.2:" in comment or "external-secrets/external-secrets@v2.9.0:" in comment


# ---------------------------------------------------------------- what the schemas cannot say


def test_the_api_rolls_without_losing_capacity_and_scales_2_to_20() -> None:
    docs = rendered("production")
    api = one(docs, "Deployment", "contrackt-api")
    assert {"maxSurge": 1, "maxUnavailable": 0} == api["spec"]["strategy"]["rollingUpdate"]
    pod_labels = api["spec"]["template"]["metadata"]["labels"]
    anti = api["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    pdb = one(docs, "PodDisruptionBudget", "contrackt-api")
    assert 2 == pdb["spec"]["minAvailable"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = one(docs, "HorizontalPodAutoscaler", "contrackt-api")
    assert (2, 20) == (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
    assert "contrackt-api" == hpa["spec"]["scaleTargetRef"]["name"]
    assert ["Resource", "Pods"] == [m["type"] for m in hpa["spec"]["metrics"]]
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert "/v1/health/live" == container["livenessProbe"]["httpGet"]["path"]
    assert "/v1/health/ready" == container["readinessProbe"]["httpGet"]["path"]
    assert {"/v1/health/live", "/v1/health/ready"} <= {r.path for r in health.router.routes}  # type: ignore[attr-defined]


def test_the_requests_per_second_metric_is_one_the_adapter_publishes_from_a_series_the_api_exports() -> None:
    hpa = one(rendered("production"), "HorizontalPodAutoscaler", "contrackt-api")
    metric = hpa["spec"]["metrics"][1]["pods"]["metric"]["name"]
    values = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    assert metric == rule["name"]["as"]
    series = rule["seriesQuery"].split("{")[0]
    assert series == f"{HTTP_REQUESTS._name}_total"  # type: ignore[attr-defined]


def test_without_the_adapter_the_api_hpa_has_cpu_only() -> None:
    hpa = one(rendered("production+extras"), "HorizontalPodAutoscaler", "contrackt-api")
    assert ["Resource"] == [m["type"] for m in hpa["spec"]["metrics"]]


@pytest.mark.parametrize("overlay", ALL)
def test_worker_probes_use_its_own_listener_and_keep_the_sandbox_identity(overlay: str) -> None:
    docs = rendered(overlay)
    worker = one(docs, "Deployment", "contrackt-worker")
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = configmap_env(docs, container, "contrackt-workers")
    assert f"0.0.0.0:{ports['health']}" == env["CONTRACKT_WORKER_LISTEN"]
    for probe, path in (("startupProbe", "/v1/health/live"), ("livenessProbe", "/v1/health/live")):
        assert {"path": path, "port": "health"} == container[probe]["httpGet"]
    assert {"path": "/v1/health/ready", "port": "health"} == container["readinessProbe"]["httpGet"]
    # ADR 0006: root of the pod's own user namespace, with only the capabilities to switch uids.
    assert pod["hostUsers"] is False
    assert 0 == pod["securityContext"]["runAsUser"]
    assert {"drop": ["ALL"], "add": ["SETUID", "SETGID", "KILL"]} == container["securityContext"]["capabilities"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(("overlay", "trigger"), [("production", "redis"), ("production-kafka", "kafka")])
def test_keda_scales_workers_2_to_50_on_the_queue_the_adapter_really_uses(overlay: str, trigger: str) -> None:
    docs = rendered(overlay)
    (so,) = of_kind(docs, "ScaledObject")
    spec = so["spec"]
    assert "contrackt-worker" == spec["scaleTargetRef"]["name"]
    assert "contrackt-workers" == so["metadata"]["namespace"]
    assert (2, 50) == (spec["minReplicaCount"], spec["maxReplicaCount"])
    # The report: back to 2 after 5 minutes without lag. KEDA's cooldownPeriod only governs
    # scaling to zero; the HPA's scale-down window does it from N to the minimum.
    assert 300 == spec["cooldownPeriod"]
    assert (
        300 == spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
    )
    (t,) = spec["triggers"]
    assert trigger == t["type"]
    assert set(t["metadata"]) <= KEDA_TRIGGER_METADATA[trigger]
    if trigger == "redis":
        assert RedisStreamsQueue.from_url("redis://127.0.0.1:6379/0").backlog_key == t["metadata"]["listName"]
        auth = one(docs, "TriggerAuthentication", t["authenticationRef"]["name"])
        refs = {(r["parameter"], r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
        assert {
            ("address", "contrackt-keda", "redis-address"),
            ("password", "contrackt-keda", "redis-password"),
        } == refs
    else:
        default = kafka_queue.KafkaQueue.from_url("kafka://kafka:9092")
        assert (default.group, default.topic) == (t["metadata"]["consumerGroup"], t["metadata"]["topic"])
        assert "earliest" == t["metadata"]["offsetResetPolicy"]  # as the adapter's consumers start


def test_only_one_queue_autoscaler_per_overlay() -> None:
    for overlay in ALL:
        assert 1 == len(of_kind(rendered(overlay), "ScaledObject")), overlay


def mounted_secret_file(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str, int] | None:
    """(secret name, key, mode) of the secret file at `path` in the container, if there is one."""
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        if "secret" not in volume:
            return None
        secret = volume["secret"]
        name = path[len(prefix) :]
        items = secret.get("items")
        key = next((i["key"] for i in items if i["path"] == name), None) if items else name
        if key is None:
            return None
        return secret["secretName"], key, secret.get("defaultMode", 0o644)
    return None


@pytest.mark.parametrize("overlay", ALL)
def test_secrets_reach_the_pods_as_files_never_as_environment(overlay: str) -> None:
    docs = rendered(overlay)
    known = {f"CONTRACKT_{s.upper()}_FILE" for s in SECRET_SETTINGS} | {"CONTRACKT_RECEIPT_KEY_FILE"}
    for workload, pod in pod_specs(docs):
        for container in pod["containers"]:
            assert not [s for s in container.get("envFrom", []) if "secretRef" in s], workload["metadata"]["name"]
            assert not [e for e in container.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
            for name, value in env_of(container).items():
                if not name.endswith("_FILE") or name == "AWS_SHARED_CREDENTIALS_FILE":
                    continue
                assert name in known, f"{name} is no setting's file variant"
                found = mounted_secret_file(pod, container, value)
                assert found is not None, f"{workload['metadata']['name']}: {name}={value} is not a mounted secret"
                mode = found[2]
                # secret_files refuses a file readable by others; with fsGroup 0440, else 0400.
                assert 0 == mode & FORBIDDEN_MODE, f"{name}: mode {mode:#o}"
                if mode & stat.S_IRGRP:
                    assert pod["securityContext"].get("fsGroup") is not None


def test_only_the_migration_holds_the_database_administrator() -> None:
    for overlay in ALL:
        docs = rendered(overlay)
        holders = [
            w["metadata"]["name"]
            for w, pod in pod_specs(docs)
            for c in pod["containers"]
            if "CONTRACKT_DATABASE_ADMIN_URL_FILE" in env_of(c)
            or any(v.get("secret", {}).get("secretName") == "contrackt-migrate" for v in pod["volumes"])
        ]
        assert ["contrackt-migrate"] == holders, overlay
        job = one(docs, "Job", "contrackt-migrate")
        assert ["migrate"] == job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert "PreSync" == job["metadata"]["annotations"]["argocd.argoproj.io/hook"]
        admin_secrets = [
            d
            for d in of_kind(docs, "ExternalSecret")
            if any("admin" in x["remoteRef"]["key"] for x in d["spec"]["data"])
        ]
        assert ["contrackt-migrate"] == [d["spec"]["target"]["name"] for d in admin_secrets]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_secret_a_pod_needs_comes_from_an_external_secret(overlay: str) -> None:
    docs = rendered(overlay)
    provided = {
        (d["metadata"]["namespace"], d["spec"]["target"]["name"], x["secretKey"])
        for d in of_kind(docs, "ExternalSecret")
        for x in d["spec"]["data"]
    }
    needed = set()
    for workload, pod in pod_specs(docs):
        for v in pod["volumes"]:
            secret = v.get("secret")
            if secret and not secret.get("optional") and secret["secretName"] != "contrackt-receipt-key":
                for item in secret["items"]:
                    needed.add((workload["metadata"]["namespace"], secret["secretName"], item["key"]))
    for auth in of_kind(docs, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            needed.add((auth["metadata"]["namespace"], ref["name"], ref["key"]))
    assert needed and needed <= provided, needed - provided
    store = one(docs, "ClusterSecretStore", "contrackt")
    assert [{"namespaces": ["contrackt-api", "contrackt-workers"]}] == store["spec"]["conditions"]


def test_the_receipt_key_component_mounts_one_shared_secret_on_the_api_only() -> None:
    docs = rendered("production+extras")
    api = one(docs, "Deployment", "contrackt-api")["spec"]["template"]["spec"]
    (container,) = api["containers"]
    path = env_of(container)["CONTRACKT_RECEIPT_KEY_FILE"]
    assert ("contrackt-receipt-key", "receipt-key.pem") == mounted_secret_file(api, container, path)[:2]  # type: ignore[index]
    worker = one(docs, "Deployment", "contrackt-worker")["spec"]["template"]["spec"]
    assert "CONTRACKT_RECEIPT_KEY_FILE" not in env_of(worker["containers"][0])
    # The default overlays keep the database-wrapped key (ADR 0009): no receipt key file at all.
    api_default = one(rendered("production"), "Deployment", "contrackt-api")["spec"]["template"]["spec"]
    assert "CONTRACKT_RECEIPT_KEY_FILE" not in env_of(api_default["containers"][0])


# ---------------------------------------------------------------- network policies


def selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    selector = policy["spec"]["podSelector"]
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        assert "In" == expr["operator"], "the tests evaluate In only"
        if labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def policies_for(docs: tuple[dict[str, Any], ...], namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["namespace"] == namespace and selects(p, labels)]


def egress_rules(docs: tuple[dict[str, Any], ...], namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    return [r for p in policies_for(docs, namespace, labels) for r in p["spec"].get("egress", [])]


def is_dns(peer: dict[str, Any]) -> bool:
    return peer == {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
    }


def admits(block: dict[str, Any], address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    net = ipaddress.ip_network(block["cidr"])
    if address.version != net.version or address not in net:
        return False
    return not any(
        address in ipaddress.ip_network(x)
        for x in block.get("except", [])
        if ipaddress.ip_network(x).version == net.version
    )


def test_every_namespace_denies_by_default_both_ways() -> None:
    docs = rendered("production")
    for ns in NAMESPACES:
        denies = [
            p
            for p in of_kind(docs, "NetworkPolicy")
            if p["metadata"]["namespace"] == ns
            and p["spec"]["podSelector"] == {}
            and sorted(p["spec"]["policyTypes"]) == ["Egress", "Ingress"]
            and "ingress" not in p["spec"]
            and "egress" not in p["spec"]
        ]
        assert 1 == len(denies), ns


def test_no_pod_may_reach_the_metadata_endpoint() -> None:
    for policy in of_kind(rendered("production"), "NetworkPolicy"):
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), f"{policy['metadata']['name']}: an egress rule without `to` allows everything"
            for peer in rule["to"]:
                if "ipBlock" in peer:
                    for endpoint in METADATA_ENDPOINTS:
                        assert not admits(peer["ipBlock"], endpoint), (policy["metadata"]["name"], str(endpoint))


WORKER = {"app.kubernetes.io/name": "contrackt", "app.kubernetes.io/component": "worker"}
API = {"app.kubernetes.io/name": "contrackt", "app.kubernetes.io/component": "api"}


@pytest.mark.parametrize(("namespace", "labels"), [("contrackt-workers", WORKER), ("contrackt-api", API)])
def test_api_and_workers_reach_only_dns_the_data_namespace_and_https_to_public_addresses(
    namespace: str, labels: dict[str, str]
) -> None:
    docs = rendered("production")
    rules = egress_rules(docs, namespace, labels)
    assert rules
    for rule in rules:
        ports = {(p["port"], p.get("protocol", "TCP")) for p in rule["ports"]}
        for peer in rule["to"]:
            if is_dns(peer):
                assert {(53, "UDP"), (53, "TCP")} == ports
            elif "ipBlock" in peer:
                assert {(443, "TCP")} == ports
                for private in ("10.1.2.3", "172.20.0.1", "192.168.1.1", "100.64.0.1", "fd12::1", "127.0.0.1"):
                    assert not admits(peer["ipBlock"], ipaddress.ip_address(private)), private
            else:
                assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "contrackt-data"}}} == peer
                assert ports <= {(5432, "TCP"), (6379, "TCP"), (9092, "TCP"), (9000, "TCP")}


def test_api_takes_requests_from_the_ingress_controller_and_scrapes_from_monitoring_only() -> None:
    docs = rendered("production")
    api_port = one(docs, "Deployment", "contrackt-api")["spec"]["template"]["spec"]["containers"][0]["ports"]
    ports = {p["name"]: p["containerPort"] for p in api_port}
    seen = set()
    for policy in policies_for(docs, "contrackt-api", API):
        for rule in policy["spec"].get("ingress", []):
            (peer,) = rule["from"]
            source = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            seen |= {(source, p["port"]) for p in rule["ports"]}
    assert {("ingress-nginx", ports["http"]), ("contrackt-monitoring", ports["metrics"])} == seen
    metrics_listen = one(docs, "ConfigMap", "contrackt-api")["data"]["CONTRACKT_METRICS_LISTEN"]
    assert f"0.0.0.0:{ports['metrics']}" == metrics_listen


def test_workers_take_connections_from_monitoring_only() -> None:
    docs = rendered("production")
    rules = [r for p in policies_for(docs, "contrackt-workers", WORKER) for r in p["spec"].get("ingress", [])]
    assert [
        {
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "contrackt-monitoring"}}}],
            "ports": [{"port": 9100, "protocol": "TCP"}],
        }
    ] == rules


def test_the_ingress_terminates_tls_and_limits_each_client_address() -> None:
    ingress = one(rendered("production"), "Ingress", "contrackt-api")
    hosts = {r["host"] for r in ingress["spec"]["rules"]}
    assert hosts <= {h for t in ingress["spec"]["tls"] for h in t["hosts"]}
    notes = ingress["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/limit-rps"]) > 0
    assert int(notes["nginx.ingress.kubernetes.io/limit-connections"]) > 0
    assert "off" == notes["nginx.ingress.kubernetes.io/proxy-request-buffering"]  # no document on nginx's disk
    assert int(notes["nginx.ingress.kubernetes.io/proxy-body-size"].rstrip("m")) > Settings().max_upload_mb


def test_the_gpu_overlay_runs_the_gpu_image_on_gpu_nodes_and_only_the_workers() -> None:
    docs = rendered("production-gpu")
    pod = one(docs, "Deployment", "contrackt-worker")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "1" == container["resources"]["limits"]["nvidia.com/gpu"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"]
    env = env_of(container)
    assert "cuda" == env["CONTRACKT_OCR_DEVICE"]
    assert Settings(ocr_device=env["CONTRACKT_OCR_DEVICE"], ocr_device_precision=env["CONTRACKT_OCR_DEVICE_PRECISION"])
    assert env["CUDA_CACHE_PATH"].startswith("/tmp/")  # the only writable place
    assert container["image"] == "registry.example.com/contrackt:0.1.0-gpu"
    api = one(docs, "Deployment", "contrackt-api")["spec"]["template"]["spec"]["containers"][0]
    assert api["image"] == "registry.example.com/contrackt:0.1.0"
    cpu = one(rendered("production"), "Deployment", "contrackt-worker")["spec"]["template"]["spec"]
    assert "nodeSelector" not in cpu and "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]
    assert {"CONTRACKT_DATABASE_URL_FILE", "CONTRACKT_QUEUE_URL_FILE"} <= set(env_of(container))


def test_the_gpu_image_target_installs_the_pinned_gpu_requirements() -> None:
    """`--target worker-gpu` adds requirements-gpu.txt (every line pinned) and asks for the GPU;
    the default build (the last stage) stays the CPU image."""
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.M)
    assert stages == ["base", "worker-gpu", "runtime"]
    gpu = text.split("AS worker-gpu")[1].split("\nFROM ")[0]
    assert "pip install --no-cache-dir -r requirements-gpu.txt" in gpu
    assert "CONTRACKT_OCR_DEVICE=cuda" in gpu and "USER 10001" in gpu
    assert text.rstrip().endswith("FROM base AS runtime")
    pins = [ln for ln in (ROOT / "requirements-gpu.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    assert "torch==2.11.0" in pins and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", p) for p in pins)


# ---------------------------------------------------------------- compose


def compose(*args: str, file: Path = DEPLOY / "docker-compose.yml") -> subprocess.CompletedProcess[str]:
    # No variables from outside: `docker compose up` must start as it is.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
    return run(tool("docker-compose"), "-f", str(file), *args, env=env, cwd=file.parent)


@pytest.mark.parametrize("profile", [[], ["--profile", "kafka"]])
def test_compose_file_is_valid_without_any_variable(profile: list[str]) -> None:
    out = compose(*profile, "config", "-q")
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_config_check_catches_a_broken_file(tmp_path: Path) -> None:
    broken = (
        (DEPLOY / "docker-compose.yml")
        .read_text()
        .replace("condition: service_completed_successfully}", "condition: service_finished}", 1)
    )
    (tmp_path / "docker-compose.yml").write_text(broken)
    out = compose("config", "-q", file=tmp_path / "docker-compose.yml")
    assert out.returncode != 0
    assert "service_finished" in out.stdout + out.stderr


@cache
def compose_config(profile: str | None) -> dict[str, Any]:
    out = compose(*(["--profile", profile] if profile else []), "config")
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)  # type: ignore[no-any-return]


def default_services() -> dict[str, Any]:
    # docker-compose 1.29's `config` lists the services of every profile; `up` starts these.
    return {n: s for n, s in compose_config(None)["services"].items() if not s.get("profiles")}


def test_compose_brings_up_the_stack_with_healthchecks_and_ordering() -> None:
    services = default_services()
    assert {"postgres", "redis", "minio", "keys-init", "migrate", "api", "worker"} == set(services)
    for name in ("postgres", "redis", "minio", "api", "worker"):
        assert services[name]["healthcheck"]["test"], name
    for name in ("api", "worker"):
        deps = services[name]["depends_on"]
        assert "service_completed_successfully" == deps["migrate"]["condition"]
        assert "service_completed_successfully" == deps["keys-init"]["condition"]
        assert "service_healthy" == deps["redis"]["condition"]
        assert "service_healthy" == deps["minio"]["condition"]
    assert "service_healthy" == services["migrate"]["depends_on"]["postgres"]["condition"]
    for service in compose_config("kafka")["services"].values():
        for port in service.get("ports", []):
            # docker-compose 1.29 prints "127.0.0.1:8000:8000/tcp"; Compose v2 a mapping with host_ip
            assert "127.0.0.1" == (port["host_ip"] if isinstance(port, dict) else port.split(":")[0])


def test_compose_gives_the_admin_credentials_to_migrate_only() -> None:
    services = compose_config("kafka")["services"]
    holders = sorted(n for n, s in services.items() if "CONTRACKT_DATABASE_ADMIN_URL" in s.get("environment", {}))
    assert ["migrate"] == holders
    assert "@postgres:5432/postgres" in services["migrate"]["environment"]["CONTRACKT_DATABASE_ADMIN_URL"]


def test_compose_allows_local_keys_explicitly_and_keeps_the_worker_sandbox() -> None:
    services = compose_config("kafka")["services"]
    for name in ("api", "worker", "api-kafka", "worker-kafka"):
        env = services[name]["environment"]
        assert env["CONTRACKT_KEYS_URL"].startswith("local:///keys/")
        assert "1" == env["CONTRACKT_ALLOW_LOCAL_KEYS"]
        assert "production" == env["CONTRACKT_ENV"]
    for name in ("worker", "worker-kafka"):
        assert "0" == services[name]["user"]
        assert ["SETUID", "SETGID", "KILL"] == services[name]["cap_add"]
        assert ["ALL"] == services[name]["cap_drop"]


def test_compose_default_credentials_are_visibly_local() -> None:
    services = default_services()
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("local-only-")
    assert services["minio"]["environment"]["MINIO_ROOT_PASSWORD"].startswith("local-only-")
    assert ":local-only-app-password@" in services["api"]["environment"]["CONTRACKT_DATABASE_URL"]


def test_the_kafka_profile_switches_api_and_worker_to_kafka() -> None:
    services = compose_config("kafka")["services"]
    for name in ("api-kafka", "worker-kafka"):
        url = services[name]["environment"]["CONTRACKT_QUEUE_URL"]
        queue = kafka_queue.KafkaQueue.from_url(url)
        assert ("kafka:9092", "contrackt-workers") == (queue.bootstrap, queue.group)
        assert "service_healthy" == services[name]["depends_on"]["kafka"]["condition"]
    assert services["kafka"]["healthcheck"]["test"]
    assert {"kafka", "api-kafka", "worker-kafka"}.isdisjoint(default_services())
    assert services["api"]["environment"]["CONTRACKT_QUEUE_URL"].startswith("redis://")


def test_keys_init_makes_one_master_key_in_two_copies_and_keeps_it(tmp_path: Path) -> None:
    """The compose stack's key step, run here with /keys moved to a temporary directory."""
    if os.geteuid() != 0:
        pytest.fail("this test runs keys-init's chown as the container does: it needs root (CI runs as root)")
    from contrackt.adapters.keys.local import _read_master_key

    script = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["keys-init"]["command"][0]
    script = script.replace("/keys/", f"{tmp_path}/keys/")
    api, worker = tmp_path / "keys/api/master.key", tmp_path / "keys/worker/master.key"
    out = run("/bin/sh", "-euc", script)
    assert out.returncode == 0, out.stderr
    first = worker.read_bytes()
    out = run("/bin/sh", "-euc", script)  # a second `up` must keep the key: every document depends on it
    assert out.returncode == 0, out.stderr
    assert first == _read_master_key(worker) == _read_master_key(api)
    assert 32 == len(first)
    assert (10001, 0) == (api.stat().st_uid, worker.stat().st_uid)
    assert 0o600 == stat.S_IMODE(api.stat().st_mode) == stat.S_IMODE(worker.stat().st_mode)
