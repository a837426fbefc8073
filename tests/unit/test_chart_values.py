"""deploy/k8s/values: the values files for the official NATS and Redis charts parse, use only
value paths the charts have, and set what docs/operations.md and the manifests rely on.

The charts cannot be fetched here, so what each file may set is written down below from the
charts' own ``values.yaml`` (NATS chart 1.x, Bitnami Redis): a key of another chart version
(the NATS chart 0.x spelt file storage ``nats.jetstream.fileStorage``) would be ignored by
helm without a word, and is refused here instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from broker.config import Config
from edge_runtime.embedded import MAX_PAYLOAD, MAX_PENDING
from edge_runtime.servers import parse_servers

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "k8s"
#: the page that installs the charts (Operations: Deployment)
OPERATIONS = (ROOT / "docs" / "operations.md").read_text()

#: Value paths of the NATS chart 1.x that values/nats.yaml may set (``merge`` takes any
#: nats-server setting, ``topologySpreadConstraints`` any topology key).
NATS_PATHS = {
    "config.cluster.enabled",
    "config.cluster.replicas",
    "config.jetstream.enabled",
    "config.jetstream.fileStore.enabled",
    "config.jetstream.fileStore.pvc.enabled",
    "config.jetstream.fileStore.pvc.size",
    "config.jetstream.memoryStore.enabled",
    "config.cluster.merge.*",
    "config.merge.*",
    "configMap.merge.*",
    "container.env.*",
    "natsBox.enabled",
    "podTemplate.topologySpreadConstraints.*",
    "podDisruptionBudget.enabled",
}
#: Value paths of the Bitnami Redis chart that values/redis.yaml may set.
REDIS_PATHS = {
    "architecture",
    "auth.enabled",
    "auth.existingSecret",
    "auth.existingSecretPasswordKey",
    "master.persistence.enabled",
    "master.persistence.size",
    "master.resources.*",
}


def values(chart: str) -> dict[str, Any]:
    loaded = yaml.safe_load((K8S / "values" / f"{chart}.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def leaves(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Every leaf's dotted path."""
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out |= leaves(value, path + ".") if isinstance(value, dict) else {path}
    return out


def known(path: str, allowed: set[str]) -> bool:
    return path in allowed or any(a.endswith(".*") and path.startswith(a[:-1]) for a in allowed)


def config_map() -> dict[str, str]:
    for doc in yaml.safe_load_all((K8S / "config.yaml").read_text()):
        if doc and doc["kind"] == "ConfigMap":
            return doc["data"]  # type: ignore[no-any-return]
    raise AssertionError("no ConfigMap in deploy/k8s/config.yaml")


def deployment(name: str) -> dict[str, Any]:
    for doc in yaml.safe_load_all((K8S / f"{name}.yaml").read_text()):
        if doc and doc["kind"] == "Deployment":
            return doc  # type: ignore[no-any-return]
    raise AssertionError(f"no Deployment in deploy/k8s/{name}.yaml")


def test_every_value_is_one_the_chart_has() -> None:
    """No misspelt or other-version key: helm would ignore it silently."""
    for chart, allowed in (("nats", NATS_PATHS), ("redis", REDIS_PATHS)):
        unknown = {p for p in leaves(values(chart)) if not known(p, allowed)}
        assert not unknown, f"{chart}: {sorted(unknown)}"


def test_nats_is_a_three_server_cluster_with_jetstream_on_files() -> None:
    """What docs/operations.md promises: three servers with routes, JetStream on file storage with a
    volume each (nothing in memory only), one server per node, at most one down at a time."""
    config = values("nats")["config"]
    assert (config["cluster"]["enabled"], config["cluster"]["replicas"]) == (True, 3)
    jetstream = config["jetstream"]
    assert jetstream["enabled"] is True
    assert jetstream["fileStore"]["enabled"] is True
    assert jetstream["fileStore"]["pvc"]["enabled"] is True
    assert re.fullmatch(r"\d+Gi", jetstream["fileStore"]["pvc"]["size"])
    assert jetstream["memoryStore"]["enabled"] is False
    spread = values("nats")["podTemplate"]["topologySpreadConstraints"]
    assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
    assert values("nats")["podDisruptionBudget"]["enabled"] is True
    assert "three servers with JetStream on volumes, one per node" in " ".join(OPERATIONS.split())


def test_the_services_use_every_server_and_replicate_on_all_three() -> None:
    """The ConfigMap's NATS_SERVERS names each server of the chart's StatefulSet (release
    ``nats`` as docs/operations.md installs it), and ``[nats] replicas`` equals the cluster size:
    every JetStream asset of the project has a copy on each server."""
    size = values("nats")["config"]["cluster"]["replicas"]
    data = config_map()
    servers = parse_servers(data["NATS_SERVERS"]).servers
    assert servers == tuple(f"nats://nats-{i}.nats-headless:4222" for i in range(size))
    assert Config.from_toml(data["config.toml"], "config.toml").nats.replicas == size
    assert "helm install nats nats/nats" in OPERATIONS


def test_the_max_payload_carries_the_largest_request() -> None:
    """The servers' max_payload is the embedded server's (64 MiB: a 32 MiB request and any
    answer travel inline) and what they buffer for a slow client holds several of those."""
    merge = values("nats")["config"]["merge"]
    assert merge["max_payload"] == MAX_PAYLOAD
    assert merge["max_pending"] == MAX_PENDING


def test_redis_is_one_primary_with_the_secret_the_services_read() -> None:
    """Standalone (service ``redis-master`` for release ``redis``), password from the secret
    the broker reads, data on a volume."""
    redis = values("redis")
    assert redis["architecture"] == "standalone"
    assert redis["auth"]["enabled"] is True
    assert redis["master"]["persistence"]["enabled"] is True
    env = {
        e["name"]: e
        for e in deployment("broker")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == (
        redis["auth"]["existingSecret"],
        redis["auth"]["existingSecretPasswordKey"],
    )
    assert "@redis-master:6379/" in env["REDIS_URL"]["value"]
    assert "helm install redis oci://registry-1.docker.io/bitnamicharts/redis" in OPERATIONS
    assert f"create secret generic {ref['name']} --from-literal={ref['key']}=" in OPERATIONS


def test_the_docs_install_each_chart_with_its_values_file() -> None:
    """Each ``helm install`` of docs/operations.md passes a values file of deploy/k8s/values."""
    installs = re.findall(r"helm install (\w+) .*?-f (deploy/k8s/values/\S+)", OPERATIONS, re.S)
    assert dict(installs) == {
        "nats": "deploy/k8s/values/nats.yaml",
        "redis": "deploy/k8s/values/redis.yaml",
    }
    for _, path in installs:
        assert (ROOT / path).is_file()
