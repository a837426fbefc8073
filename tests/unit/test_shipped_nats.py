"""The NATS we ship is closed, read offline: every server configuration (nats/, Compose,
the Kubernetes chart values) has users with the generated permissions, no anonymous user and
no password written in it; the client port is not published; every service connects as
its own user with a password from the environment or a secret."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_runtime.nats_users import (
    SHIPPED_ROLES,
    password_variable,
    permissions_conf,
    permissions_variable,
)
from edge_runtime.servers import parse_servers

ROOT = Path(__file__).parents[2]
K8S = ROOT / "deploy" / "k8s"
NATS_VALUES = yaml.safe_load((K8S / "values" / "nats.yaml").read_text())
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
#: Every server configuration we ship, by where it is used.
CONFIGS = {
    "nats/auth.conf": (ROOT / "nats" / "auth.conf").read_text(),
    "nats/server.conf (Compose)": (ROOT / "nats" / "server.conf").read_text(),
    "nats/cluster.conf": (ROOT / "nats" / "cluster.conf").read_text(),
    "values/nats.yaml auth.conf": NATS_VALUES["configMap"]["merge"]["data"]["auth.conf"],
}
_USER = re.compile(r"\{\s*user:\s*([\w-]+),\s*password:\s*(\S+?),\s*permissions:\s*(\S+)")


def test_the_permissions_file_is_generated_from_the_roles() -> None:
    """nats/permissions.conf is what scripts/nats-permissions writes now, and the chart
    values carry the same text (regenerate, then copy, when this fails)."""
    assert (ROOT / "nats" / "permissions.conf").read_text() == permissions_conf()
    assert NATS_VALUES["configMap"]["merge"]["data"]["permissions.conf"] == permissions_conf()


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_has_the_roles_and_no_anonymous_user(name: str) -> None:
    """Each configuration includes the permissions, names every shipped role with its own
    password variable and permissions, writes no password, and has no anonymous user."""
    text = CONFIGS[name]
    assert re.search(r"(?m)^\s*include permissions\.conf\s*$", text)
    assert "authorization" in text
    assert "no_auth_user" not in text
    users = {m.group(1): (m.group(2), m.group(3)) for m in _USER.finditer(text)}
    for role in SHIPPED_ROLES:
        assert users[role] == (f"${password_variable(role)}", f"${permissions_variable(role)}")
    passwords = re.findall(r"password:\s*([^,\s}]+)", text)
    assert passwords
    assert all(p.startswith("$") for p in passwords), passwords


def test_the_cluster_config_authenticates_its_routes() -> None:
    """nats/cluster.conf accepts routes from the route user only and dials its peers with
    URLs from the environment (the route password in them, never in the file)."""
    cluster = re.search(r"(?s)\ncluster \{(.*?)\n\}", CONFIGS["nats/cluster.conf"])
    assert cluster is not None
    assert "authorization { user: route, password: $LLM_EDGE_ROUTE_PASSWORD }" in cluster[1]
    routes = ", ".join(f"$LLM_EDGE_ROUTE_URL_N{i}" for i in (1, 2, 3))
    assert f"routes: [{routes}]" in cluster[1]


def test_compose_publishes_no_nats_port_and_reads_passwords_from_the_environment() -> None:
    """No service publishes 4222 or 8222; the nats service gets each password from the
    environment (compose refuses to start without it) and mounts the config with the
    permissions it includes; each of our services connects as its own user."""
    services = COMPOSE["services"]
    for name, service in services.items():
        published = {str(p).rsplit(":", 1)[-1] for p in service.get("ports", [])}
        assert not published & {"4222", "8222"}, name
    nats = services["nats"]
    assert "ports" not in nats
    required = re.compile(r"^\$\{(LLM_EDGE_\w+_PASSWORD):\?[^}]+\}$")
    env = {k: required.match(v) for k, v in nats["environment"].items()}
    assert all(m is not None and m.group(1) == k for k, m in env.items()), nats["environment"]
    assert set(env) == {password_variable(role) for role in SHIPPED_ROLES}
    assert "./nats:/etc/nats:ro" in nats["volumes"]
    users = {"broker-1": "broker", "broker-2": "broker", "worker-mock": "worker-mock"}
    for name, user in (users | {"bridge": "bridge"}).items():
        environment = services[name]["environment"]
        url = environment["NATS_URL"]
        assert url.startswith(f"nats://{user}:${{{password_variable(user)}:?"), (name, url)
        assert "--nats-url" not in services[name]["command"], name
        if user != "broker":
            assert environment["NATS_INBOX_PREFIX"] == f"_INBOX.{user}", name


def test_the_port_is_published_on_loopback_only_when_asked() -> None:
    """compose.nats-port.yaml, the opt-in, publishes NATS's client port on 127.0.0.1 only,
    and the merged file still follows the Compose specification."""
    import json
    from importlib.resources import files

    import jsonschema

    override = yaml.safe_load((ROOT / "compose.nats-port.yaml").read_text())
    assert override["services"] == {"nats": {"ports": ["127.0.0.1:4222:4222"]}}
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    merged = {**COMPOSE, "services": {**COMPOSE["services"]}}
    merged["services"]["nats"] = {**merged["services"]["nats"], **override["services"]["nats"]}
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(merged)) == []
    assert "compose.nats-port.yaml" in (ROOT / "docs" / "operations.md").read_text()


def test_compose_env_writes_every_password_compose_needs(tmp_path: Path) -> None:
    """`scripts/dev compose-env` writes a random password for each variable compose.yaml
    requires, readable by its owner only, and keeps an existing file."""
    target = tmp_path / "compose.env"
    command = [str(ROOT / "scripts" / "dev"), "compose-env"]
    env = {**os.environ, "ENV_FILE": str(target)}
    subprocess.run(command, env=env, check=True, timeout=30)
    written = dict(line.split("=", 1) for line in target.read_text().splitlines())
    needed = set(re.findall(r"\$\{(\w+):\?", (ROOT / "compose.yaml").read_text()))
    assert set(written) == needed
    assert all(re.fullmatch(r"[0-9a-f]{48}", v) for v in written.values())
    assert len(set(written.values())) == len(written)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    before = target.read_text()
    subprocess.run(command, env=env, check=True, timeout=30)
    assert target.read_text() == before


def _deployments() -> dict[str, dict[str, Any]]:
    found = {}
    for path in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == "Deployment":
                found[doc["metadata"]["name"]] = doc
    return found


def test_the_chart_runs_closed_and_unpublished() -> None:
    """The NATS chart gets every password its users name from the secret llm-edge-nats,
    authenticates routes with a password from it too, keeps the chart's ClusterIP service
    (no NodePort, no LoadBalancer) and deploys no nats-box."""
    env = NATS_VALUES["container"]["env"]
    named = set(re.findall(r"password: \$(\w+)", CONFIGS["values/nats.yaml auth.conf"]))
    for variable in named | {"LLM_EDGE_ROUTE_PASSWORD"}:
        assert env[variable]["valueFrom"]["secretKeyRef"]["name"] == "llm-edge-nats", variable
    cluster = NATS_VALUES["config"]["cluster"]["merge"]
    assert cluster["authorization"] == {
        "user": "route",
        "password": "<< $LLM_EDGE_ROUTE_PASSWORD >>",
    }
    order = sorted(env)  # the chart writes env in name order; kubelet expands earlier names only
    for i, route in enumerate(cluster["routes"]):
        name = route.removeprefix("<< $").removesuffix(" >>")
        expected = f"nats://route:$(LLM_EDGE_ROUTE_PASSWORD)@nats-{i}.nats-headless:6222"
        assert env[name] == expected
        assert order.index("LLM_EDGE_ROUTE_PASSWORD") < order.index(name)
    assert len(cluster["routes"]) == NATS_VALUES["config"]["cluster"]["replicas"]
    assert "service" not in NATS_VALUES  # the chart's default: ClusterIP, inside the cluster
    assert NATS_VALUES["natsBox"]["enabled"] is False


def test_every_deployment_connects_as_its_own_user() -> None:
    """Each Deployment's NATS_URL names its role's user with the password of that user's
    key in the secret llm-edge-nats, lists every server, and (but for brokers) reads replies
    only under its own inbox prefix."""
    config = next(
        d for d in yaml.safe_load_all((K8S / "config.yaml").read_text()) if d["kind"] == "ConfigMap"
    )
    servers = config["data"]["NATS_SERVERS"]
    assert "NATS_URL" not in config["data"]  # no identity-less URL for anyone
    roles = {"broker": "broker", "worker": None, "bridge": "bridge"}
    for name, deployment in _deployments().items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        user = roles[args[0]] or f"worker-{args[1]}"
        env = {e["name"]: e for e in container["env"]}
        secret = env["LLM_EDGE_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (secret["name"], secret["key"]) == ("llm-edge-nats", user), name
        url = env["NATS_URL"]["value"]
        assert url == f"nats://{user}:$(LLM_EDGE_NATS_PASSWORD)@$(NATS_SERVERS)", name
        names = list(env)
        assert names.index("LLM_EDGE_NATS_PASSWORD") < names.index("NATS_URL"), name
        expanded = url.replace("$(LLM_EDGE_NATS_PASSWORD)", "pw").replace(
            "$(NATS_SERVERS)", servers
        )
        parsed = parse_servers(expanded)
        assert (parsed.user, parsed.password, len(parsed.servers)) == (user, "pw", 3), name
        if user != "broker":
            assert env["NATS_INBOX_PREFIX"]["value"] == f"_INBOX.{user}", name
