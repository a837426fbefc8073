"""The nats-server configurations we ship, extracted as each deployment would run them.

``nats/auth.conf`` as it is; Compose's server config found through compose.yaml's ``nats``
service (its ``-c`` path and the volume that mounts it); the Kubernetes one rendered from
deploy/k8s/values/nats.yaml the way the NATS chart does (its ``$include`` keys and ``<< >>``
variables, the files of ``configMap.merge.data``, the passwords of ``container.env``); and
one node of ``nats/cluster.conf``. Only what a test must change is changed, in a copy: the
JetStream store (the test's temporary directory), the monitoring port (none) and the route
port (a free one); the client port is given on the command line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from edge_runtime.nats_users import password_variable

__all__ = ["PASSWORDS", "ROOT", "SHIPPED", "ShippedConfig", "shipped_config"]

ROOT = Path(__file__).parents[2]
#: Every user any shipped configuration names, with the password the tests give it.
PASSWORDS = {
    user: f"pw-{user}"
    for user in (
        "broker",
        "worker-openai",
        "worker-mock",
        "bridge",
        "admin",
        "alice",
        "bob",
        "carol",
        "route",
    )
}
#: The configurations a test can run: the file shipped, and the deployment it serves.
SHIPPED = ("auth.conf", "compose", "kubernetes", "cluster.conf")


@dataclass(frozen=True, slots=True)
class ShippedConfig:
    """A shipped configuration ready to run: its file and the server's environment."""

    path: Path
    env: dict[str, str]


def _password_env() -> dict[str, str]:
    return {password_variable(user): pw for user, pw in PASSWORDS.items()}


def _for_test(source: Path, into: Path) -> Path:
    """Copy ``source`` and the files it includes into ``into``, with the test's store,
    no monitoring port, and a free route port."""
    into.mkdir(parents=True, exist_ok=True)
    for path in source.parent.glob("*.conf"):
        text = path.read_text()
        text = re.sub(r"(?m)^\s*store_dir:.*$", "", text)  # -sd gives the test's directory
        text = re.sub(r"(?m)^http:.*$", "", text)
        text = re.sub(r"(?m)^(\s*listen:) 0\.0\.0\.0:6222", r"\1 127.0.0.1:-1", text)
        (into / path.name).write_text(text)
    return into / source.name


def _compose(into: Path) -> ShippedConfig:
    """The file compose.yaml's nats service runs: its ``-c`` path, through its volumes."""
    nats = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["nats"]
    inside = nats["command"][nats["command"].index("-c") + 1]
    for volume in nats["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./") and inside.startswith(target.rstrip("/") + "/"):
            host = ROOT / source / inside.removeprefix(target.rstrip("/") + "/")
            return ShippedConfig(_for_test(host, into), _password_env())
    raise AssertionError(f"compose.yaml mounts no file of ours at {inside}")


def _chart_format(config: dict[str, Any]) -> str:
    """The NATS chart's ``nats.formatConfig``: keys ending in ``$include`` become include
    directives, ``"<< X >>"`` strings become X unquoted."""
    text = json.dumps(config, indent=2)
    text = re.sub(r'".*\$include": "(.*)",?', r"include \1;", text)
    return re.sub(r'"<<\s+(.*?)\s+>>"', r"\1", text)


def _kubernetes(into: Path) -> ShippedConfig:
    """The chart's server config as values/nats.yaml merges it (one server: no cluster)."""
    values = yaml.safe_load((ROOT / "deploy" / "k8s" / "values" / "nats.yaml").read_text())
    into.mkdir(parents=True, exist_ok=True)
    for name, text in values["configMap"]["merge"]["data"].items():
        (into / name).write_text(text)
    (into / "nats.conf").write_text(_chart_format(values["config"]["merge"]))
    env: dict[str, str] = {}
    for name, value in sorted(values["container"]["env"].items()):  # the chart's order
        if isinstance(value, dict):
            env[name] = PASSWORDS[value["valueFrom"]["secretKeyRef"]["key"]]
        else:  # kubelet expands $(VAR) from what is defined before
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], value)
    return ShippedConfig(into / "nats.conf", env)


def _cluster(into: Path) -> ShippedConfig:
    """One node of nats/cluster.conf; its routes lead nowhere (no other node runs)."""
    env = _password_env() | {"NODE_NAME": "n1", "LLM_EDGE_ROUTE_PASSWORD": PASSWORDS["route"]}
    for i in (1, 2, 3):
        env[f"LLM_EDGE_ROUTE_URL_N{i}"] = f"nats-route://route:{PASSWORDS['route']}@127.0.0.1:1"
    return ShippedConfig(_for_test(ROOT / "nats" / "cluster.conf", into), env)


def shipped_config(name: str, into: Path) -> ShippedConfig:
    """One of :data:`SHIPPED`, written under ``into``."""
    if name == "auth.conf":
        return ShippedConfig(_for_test(ROOT / "nats" / "auth.conf", into), _password_env())
    builders = {"compose": _compose, "kubernetes": _kubernetes, "cluster.conf": _cluster}
    return builders[name](into)
