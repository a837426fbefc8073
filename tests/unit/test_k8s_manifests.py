"""deploy/k8s: every manifest is valid Kubernetes (offline) and deploys the project as promised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from broker.config import Config
from edge_runtime.metrics_port import LIVE_PATH, READY_PATH
from edge_runtime.servers import parse_servers

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "k8s"
#: The Kubernetes version the manifests are checked against (schemas ship in the package).
KUBERNETES_VERSION = "1.33.0"
#: How long a service takes to stop after SIGTERM at most (drain 10 s, then bounded steps).
STOP_S = 25


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every document of every manifest the kustomization applies."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [
        (name, doc)
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc
    ]


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in manifests() if d["kind"] == kind}


def test_the_kustomization_applies_every_manifest() -> None:
    """No manifest file is left out of `kubectl apply -k deploy/k8s`, none is missing."""
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize(
    ("name", "doc"), manifests(), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_manifest_validates_against_kubernetes(name: str, doc: dict[str, Any]) -> None:
    """Strict validation against the pinned Kubernetes version's schemas: no unknown field,
    no wrong type."""
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_refuses_a_broken_manifest() -> None:
    """The check is real: a wrong type and an unknown field are both refused."""
    broker = of_kind("Deployment")["llm-edge-broker"]
    for broken in (
        {**broker, "spec": {**broker["spec"], "replicas": "two"}},
        {**broker, "spec": {**broker["spec"], "replica": 2}},
    ):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_every_deployment_is_probed_bounded_and_drained() -> None:
    """Each role runs our command with resource requests, readiness and liveness probes,
    and a termination grace period longer than its drain; a PDB and a CPU HPA select it."""
    pdbs = of_kind("PodDisruptionBudget")
    hpas = of_kind("HorizontalPodAutoscaler")
    deployments = of_kind("Deployment")
    assert set(deployments) == {
        "llm-edge-broker",
        "llm-edge-bridge",
        "llm-edge-worker-mock",
        "llm-edge-worker-openai",
    }
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["replicas"] >= 2, name
        assert pod["terminationGracePeriodSeconds"] > STOP_S, name
        (container,) = pod["containers"]
        assert container["args"][0] in {"broker", "worker", "bridge"}, name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert {"readinessProbe", "livenessProbe"} <= set(container), name
        selector = pdbs[name]["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), name
        assert pdbs[name]["spec"]["minAvailable"] < spec["replicas"], name  # drains can proceed
        hpa = hpas[name]["spec"]
        target = {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert hpa["scaleTargetRef"] == target, name
        assert hpa["metrics"][0]["resource"]["name"] == "cpu"


def test_the_configuration_is_ours_and_replicates_across_the_nats_cluster() -> None:
    """The ConfigMap's TOML loads as our configuration with R3 JetStream assets, every
    worker serves one of its providers, NATS_SERVERS lists the chart's three servers, and the
    NATS values ask for a 3-server cluster with JetStream."""
    data = of_kind("ConfigMap")["llm-edge-config"]["data"]
    config = Config.from_toml(data["config.toml"], "config.toml")
    assert config.nats.replicas == 3
    workers = [
        d["spec"]["template"]["spec"]["containers"][0]["args"]
        for d in of_kind("Deployment").values()
        if d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "worker"
    ]
    assert {args[1] for args in workers} <= set(config.providers)
    assert len(parse_servers(data["NATS_SERVERS"]).servers) == 3
    nats = yaml.safe_load((K8S / "values" / "nats.yaml").read_text())
    assert (nats["config"]["cluster"]["enabled"], nats["config"]["cluster"]["replicas"]) == (
        True,
        3,
    )
    assert nats["config"]["jetstream"]["enabled"] is True
    redis = yaml.safe_load((K8S / "values" / "redis.yaml").read_text())
    assert redis["auth"]["existingSecret"] == "llm-edge-redis"


def test_brokers_and_workers_are_probed_on_their_health_answers() -> None:
    """Broker and worker pods are probed over HTTP on the metrics port they serve: ready on
    /readyz (NATS connected, subscriptions on the server), live and started on /healthz (the
    event loop turns), paths the metrics port serves; that port listens on the pod's address."""
    config = of_kind("ConfigMap")["llm-edge-config"]["data"]
    assert config["LLM_EDGE_METRICS_HOST"] == "0.0.0.0"  # the kubelet probes the pod IP
    for name, deployment in of_kind("Deployment").items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        if container["args"][0] not in {"broker", "worker"}:
            continue
        args = container["args"]
        port = int(args[args.index("--metrics-port") + 1])
        assert {"name": "metrics", "containerPort": port} in container["ports"], name
        paths = {
            probe: (container[probe]["httpGet"]["path"], container[probe]["httpGet"]["port"])
            for probe in ("startupProbe", "readinessProbe", "livenessProbe")
        }
        assert paths == {
            "startupProbe": (LIVE_PATH, "metrics"),
            "readinessProbe": (READY_PATH, "metrics"),
            "livenessProbe": (LIVE_PATH, "metrics"),
        }, name
